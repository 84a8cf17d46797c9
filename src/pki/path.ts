/**
 * RFC 5280 path validation for verifyPeerChain and verifyCaChain: path building,
 * validity periods and issuer checks, and the small certificate helpers they share.
 * Not a public API: import from verify.ts or verify-ca.ts.
 */
import { KU, OID, sameBytes, type Certificate, type Extension } from "./certificate.ts";
import { certName } from "./san.ts";
import type { TrustBundle } from "./trust-bundle.ts";
import type { VerifyFailed, VerifyFailure } from "./verify.ts";

type Cert = Certificate;

export { KU, OID };
/** Critical extensions we actually enforce; RFC 5280 §6.1.4(o) requires refusing any other. */
const PROCESSED = new Set<string>([OID.san, OID.keyUsage, OID.basicConstraints, OID.extKeyUsage]);

export function fail(reason: VerifyFailure, detail: string): VerifyFailed {
  return { ok: false, reason, detail };
}

/** What the first certificate of a chain is called in messages: the leaf, unless a CA is judged on its own. */
const LEAF = "leaf certificate";

function chainLabel(i: number, first: string): string {
  return i === 0 ? first : `chain certificate #${i + 1}`;
}

function pathLabel(j: number, length: number, first = LEAF): string {
  if (j === 0) return first;
  return j === length - 1 ? "trust bundle root" : `intermediate certificate #${j}`;
}

/** Names are compared as DER bytes (RFC 5280 §7.1 allows binary comparison for names a CA encodes consistently). */
function selfIssued(cert: Cert): boolean {
  return sameBytes(cert.subjectDer, cert.issuerDer);
}

/** The issuer named by `cert`: its subject is `cert`'s issuer. */
function names(issuer: Cert, cert: Cert): boolean {
  return sameBytes(issuer.subjectDer, cert.issuerDer);
}

export function unsupportedCritical(exts: readonly Extension[]): string | undefined {
  return exts.find((e) => e.critical && !PROCESSED.has(e.oid))?.oid;
}

/**
 * RFC 5280 §6.1 on a presented chain: a path to a root of `td` (buildPath), every
 * certificate on it within its validity period at `now`, the root included, and every
 * issuer allowed to issue (checkIssuers). `first` names chain[0] in messages.
 */
export async function validatePath(
  chain: readonly Cert[],
  bundle: TrustBundle,
  td: string,
  now: Date,
  first = LEAF,
): Promise<{ ok: true; path: Cert[] } | VerifyFailed> {
  const built = await buildPath(chain, bundle, td, first);
  if (!built.ok) return built;
  const { path } = built;
  for (const [j, cert] of path.entries()) {
    const invalid = checkValidity(cert, now, `${pathLabel(j, path.length, first)} ${certName(cert)}`);
    if (invalid) return invalid;
  }
  return checkIssuers(path) ?? built;
}

function checkValidity(cert: Cert, now: Date, who: string): VerifyFailed | undefined {
  // RFC 5280 §4.1.2.5: both bounds are inclusive.
  if (now.getTime() < cert.notBefore.getTime())
    return fail("not_yet_valid", `${who} is not valid until ${cert.notBefore.toISOString()} (now ${now.toISOString()})`);
  if (now.getTime() > cert.notAfter.getTime())
    return fail("expired", `${who} expired at ${cert.notAfter.toISOString()} (now ${now.toISOString()})`);
  return undefined;
}

/**
 * Follows the presented order: each certificate is anchored by a root of `td` that has
 * its issuer's name and verifies its signature, or else must be signed by the next one.
 * Certificates after the anchor point (often the root itself, re-sent) are ignored.
 */
async function buildPath(
  chain: readonly Cert[],
  bundle: TrustBundle,
  td: string,
  first: string,
): Promise<{ ok: true; path: Cert[] } | VerifyFailed> {
  const roots = bundle.roots(td);
  for (let i = 0; i < chain.length; i++) {
    const cert = chain[i]!;
    const who = `${chainLabel(i, first)} ${certName(cert)}`;
    const named = roots.filter((r) => names(r, cert));
    for (const root of named) if (await cert.isSignedBy(root)) return { ok: true, path: [...chain.slice(0, i + 1), root] };

    const next = chain[i + 1];
    if (next && names(next, cert)) {
      if (await cert.isSignedBy(next)) continue;
      if (!otherKey(cert, next))
        return fail(
          "bad_signature",
          `${who} names "${cert.issuer}" as its issuer, but its signature does not verify against the key of ` +
            `${chainLabel(i + 1, first)} ${certName(next)}`,
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
  if (cert.extensionProblem || issuer.extensionProblem) return false;
  // A self-signed root may omit AKI (RFC 5280 §4.2.1.1): its signing key is its own.
  const claimed = cert.known.authorityKeyId ?? (selfIssued(cert) ? cert.known.subjectKeyId : undefined);
  const actual = issuer.known.subjectKeyId;
  return claimed !== undefined && actual !== undefined && claimed !== actual;
}

/** Only for the error message: which other trust domain's root would have accepted this certificate. */
async function foreignAnchor(cert: Cert, bundle: TrustBundle, td: string): Promise<{ root: Cert; td: string } | undefined> {
  for (const other of bundle.trustDomains()) {
    if (other === td) continue;
    for (const root of bundle.roots(other)) if (names(root, cert) && (await cert.isSignedBy(root))) return { root, td: other };
  }
  return undefined;
}

/** RFC 5280 §6.1.4 for every issuer in the path, the trust-bundle root included. */
function checkIssuers(path: Cert[]): VerifyFailed | undefined {
  for (let j = 1; j < path.length; j++) {
    const ca = path[j]!;
    const who = `${pathLabel(j, path.length)} ${certName(ca)}`;
    if (ca.extensionProblem) return fail("unsupported_cert", `${who}: ${ca.extensionProblem}`);
    const critical = unsupportedCritical(ca.extensions);
    if (critical) return fail("unsupported_cert", `${who} has the critical extension ${critical}, which is not supported`);

    const bc = ca.known.basicConstraints;
    if (!bc?.ca)
      return fail(
        "issuer_not_ca",
        `${who} issued ${certName(path[j - 1]!)} but is not a CA (basicConstraints cA is ${bc ? "false" : "absent"})`,
      );
    const ku = ca.known.keyUsage;
    if (ku === undefined || !(ku & KU.keyCertSign))
      return fail(
        "issuer_without_key_cert_sign",
        `${who} issued ${certName(path[j - 1]!)} but its key usage ${ku !== undefined ? "lacks keyCertSign" : "extension is absent"}`,
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
