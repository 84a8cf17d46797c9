/**
 * RFC 5280 path building and issuer checks for verifyPeerChain, and the small
 * certificate helpers both share. Not a public API: import from verify.ts.
 */
import { x509 } from "./x509.ts";
import { certName, extensionsOf } from "./san.ts";
import { sameBytes, type TrustBundle } from "./trust-bundle.ts";
import type { VerifyFailed, VerifyFailure } from "./verify.ts";

type Cert = x509.X509Certificate;

export const OID = {
  san: "2.5.29.17",
  keyUsage: "2.5.29.15",
  basicConstraints: "2.5.29.19",
  extKeyUsage: "2.5.29.37",
  anyEku: "2.5.29.37.0",
  serverAuth: "1.3.6.1.5.5.7.3.1",
  clientAuth: "1.3.6.1.5.5.7.3.2",
} as const;
/** Critical extensions we actually enforce; RFC 5280 §6.1.4(o) requires refusing any other. */
const PROCESSED = new Set<string>([OID.san, OID.keyUsage, OID.basicConstraints, OID.extKeyUsage]);
export const KU = x509.KeyUsageFlags;

export function fail(reason: VerifyFailure, detail: string): VerifyFailed {
  return { ok: false, reason, detail };
}

function chainLabel(i: number): string {
  return i === 0 ? "leaf certificate" : `chain certificate #${i + 1}`;
}

export function pathLabel(j: number, length: number): string {
  if (j === 0) return "leaf certificate";
  return j === length - 1 ? "trust bundle root" : `intermediate certificate #${j}`;
}

function sameName(a: x509.Name, b: x509.Name): boolean {
  return sameBytes(a.toArrayBuffer(), b.toArrayBuffer());
}

function selfIssued(cert: Cert): boolean {
  return sameName(cert.subjectName, cert.issuerName);
}

async function signedBy(cert: Cert, issuer: Cert): Promise<boolean> {
  try {
    return await cert.verify({ publicKey: issuer, signatureOnly: true });
  } catch {
    return false; // unsupported or mismatched algorithms: the signature is simply not verified
  }
}

export function find<T extends x509.Extension>(exts: x509.Extension[], type: abstract new (...args: never[]) => T): T | undefined {
  return exts.find((e): e is T => e instanceof type);
}

export function unsupportedCritical(exts: x509.Extension[]): string | undefined {
  return exts.find((e) => e.critical && !PROCESSED.has(e.type))?.type;
}

/**
 * Follows the presented order: each certificate is anchored by a root of `td` that has
 * its issuer's name and verifies its signature, or else must be signed by the next one.
 * Certificates after the anchor point (often the root itself, re-sent) are ignored.
 */
export async function buildPath(
  chain: readonly Cert[],
  bundle: TrustBundle,
  td: string,
): Promise<{ ok: true; path: Cert[] } | VerifyFailed> {
  const roots = bundle.roots(td);
  for (let i = 0; i < chain.length; i++) {
    const cert = chain[i]!;
    const who = `${chainLabel(i)} ${certName(cert)}`;
    const named = roots.filter((r) => sameName(r.subjectName, cert.issuerName));
    for (const root of named) if (await signedBy(cert, root)) return { ok: true, path: [...chain.slice(0, i + 1), root] };

    const next = chain[i + 1];
    if (next && sameName(next.subjectName, cert.issuerName)) {
      if (await signedBy(cert, next)) continue;
      if (!otherKey(cert, next))
        return fail(
          "bad_signature",
          `${who} names "${cert.issuer}" as its issuer, but its signature does not verify against the key of ` +
            `${chainLabel(i + 1)} ${certName(next)}`,
        );
    }
    const claimed = named.filter((r) => !otherKey(cert, r));
    if (claimed.length)
      return fail(
        "bad_signature",
        `${who} names the trust bundle root "${cert.issuer}" of "${td}" as its issuer, ` +
          `but its signature does not verify against that root's key`,
      );
    const foreign = await foreignAnchor(cert, bundle, td);
    if (foreign)
      return fail(
        "wrong_trust_domain",
        `${who} chains to root ${certName(foreign.root)} of trust domain "${foreign.td}", ` +
          `but the leaf's ID is in trust domain "${td}"`,
      );
    const why = next ? `and the next certificate, ${certName(next)}, is not its issuer` : "and the chain ends there";
    const sameNameOtherKey = named.length ? ` (a root of that name exists, but with another key)` : "";
    return fail(
      "unknown_issuer",
      `${who} is issued by "${cert.issuer}", which is not a root of "${td}"${sameNameOtherKey}, ${why}`,
    );
  }
  return fail("unknown_issuer", "the chain does not lead to a trusted root"); // not reached: the last turn returns
}

/**
 * True when key identifiers show `issuer` holds a different key from the one that
 * signed `cert`: a same-named CA (a rotated-out root, an impostor) is then simply not
 * the issuer (unknown_issuer); without that evidence a failed signature is bad_signature.
 * This only picks between two failure reasons; acceptance rests on signatures alone.
 */
function otherKey(cert: Cert, issuer: Cert): boolean {
  const aki = extensionsOf(cert);
  const ski = extensionsOf(issuer);
  if (!aki.ok || !ski.ok) return false;
  // A self-signed root may omit AKI (RFC 5280 §4.2.1.1): its signing key is its own.
  const claimed =
    find(aki.extensions, x509.AuthorityKeyIdentifierExtension)?.keyId ??
    (selfIssued(cert) ? find(aki.extensions, x509.SubjectKeyIdentifierExtension)?.keyId : undefined);
  const actual = find(ski.extensions, x509.SubjectKeyIdentifierExtension)?.keyId;
  return claimed !== undefined && actual !== undefined && claimed.toLowerCase() !== actual.toLowerCase();
}

/** Only for the error message: which other trust domain's root would have accepted this certificate. */
async function foreignAnchor(cert: Cert, bundle: TrustBundle, td: string): Promise<{ root: Cert; td: string } | undefined> {
  for (const other of bundle.trustDomains()) {
    if (other === td) continue;
    for (const root of bundle.roots(other))
      if (sameName(root.subjectName, cert.issuerName) && (await signedBy(cert, root))) return { root, td: other };
  }
  return undefined;
}

/** RFC 5280 §6.1.4 for every issuer in the path, the trust-bundle root included. */
export function checkIssuers(path: Cert[]): VerifyFailed | undefined {
  for (let j = 1; j < path.length; j++) {
    const ca = path[j]!;
    const who = `${pathLabel(j, path.length)} ${certName(ca)}`;
    const exts = extensionsOf(ca);
    if (!exts.ok) return fail("unsupported_cert", `${who}: ${exts.detail}`);
    const critical = unsupportedCritical(exts.extensions);
    if (critical) return fail("unsupported_cert", `${who} has the critical extension ${critical}, which is not supported`);

    const bc = find(exts.extensions, x509.BasicConstraintsExtension);
    if (!bc?.ca)
      return fail(
        "issuer_not_ca",
        `${who} issued ${certName(path[j - 1]!)} but is not a CA (basicConstraints cA is ${bc ? "false" : "absent"})`,
      );
    const ku = find(exts.extensions, x509.KeyUsagesExtension);
    if (!ku || !(ku.usages & KU.keyCertSign))
      return fail(
        "issuer_without_key_cert_sign",
        `${who} issued ${certName(path[j - 1]!)} but its key usage ${ku ? "lacks keyCertSign" : "extension is absent"}`,
      );
    if (bc.pathLength !== undefined) {
      // The CAs between this one and the leaf; self-issued ones (key rollover) do not count.
      const below = path.slice(1, j).filter((c) => !selfIssued(c)).length;
      if (below > bc.pathLength)
        return fail(
          "path_length_exceeded",
          `${who} has pathLenConstraint ${bc.pathLength}, but ${below} intermediate CA certificate(s) follow it`,
        );
    }
  }
  return undefined;
}
