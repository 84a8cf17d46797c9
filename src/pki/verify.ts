/**
 * Peer-chain verification by the SPIFFE X509-SVID rules: RFC 5280 path validation
 * from the leaf to a root of the leaf's own trust domain, plus the SVID leaf rules.
 * The result is the peer's SPIFFE ID or one typed reason with a sentence naming the
 * offending certificate, so the proxy can both log it and count it.
 *
 * Scope: the presented chain must be in order (each certificate signed by the next)
 * and no extension beyond SAN, basicConstraints, keyUsage and extKeyUsage is processed,
 * so a certificate with any other critical extension (e.g. nameConstraints) is refused.
 */
import type { Certificate } from "./certificate.ts";
import type { SpiffeId } from "./spiffe.ts";
import { certName, spiffeIdOfLeaf } from "./san.ts";
import type { TrustBundle } from "./trust-bundle.ts";
import { fail, KU, OID, unsupportedCritical, validatePath } from "./path.ts";

export { TrustBundle } from "./trust-bundle.ts";
export { spiffeIdOfLeaf, type LeafIdResult } from "./san.ts";

type Cert = Certificate;

export type VerifyFailure =
  | "expired"
  | "not_yet_valid"
  | "wrong_trust_domain"
  | "no_uri_san"
  | "multiple_uri_sans"
  | "malformed_id"
  | "leaf_is_ca"
  | "leaf_key_usage"
  | "issuer_not_ca"
  | "issuer_without_key_cert_sign"
  | "path_length_exceeded"
  | "wrong_eku"
  | "unknown_issuer"
  | "bad_signature"
  | "empty_chain"
  /** Unparseable extensions, a duplicated extension, or a critical extension this verifier does not process. */
  | "unsupported_cert";

export type VerifyResult =
  | { ok: true; id: SpiffeId; spiffeId: string; leaf: Cert; /** leaf, intermediates, trust-bundle root */ path: Cert[] }
  | VerifyFailed;

export interface VerifyFailed {
  ok: false;
  reason: VerifyFailure;
  /** A sentence naming the certificate and what is wrong with it. */
  detail: string;
}

export interface VerifyOptions {
  /** Defaults to the current time. */
  now?: Date;
  /** Trust domains whose peers are accepted; default: every trust domain in the bundle. */
  trustDomains?: readonly string[];
  /** When the leaf has an extKeyUsage extension it must allow this purpose (or anyExtendedKeyUsage). */
  requiredEku?: "serverAuth" | "clientAuth";
}

/** Longest chain accepted (leaf included); bounds the signature checks a peer can make us do. */
export const MAX_CHAIN_LENGTH = 8;

export const FAILURE_SUMMARY: Record<VerifyFailure, string> = {
  expired: "a certificate in the chain has expired",
  not_yet_valid: "a certificate in the chain is not valid yet",
  wrong_trust_domain: "the peer's trust domain is not accepted or not the one its chain leads to",
  no_uri_san: "the leaf has no URI SAN (no SPIFFE ID)",
  multiple_uri_sans: "the leaf has more than one URI SAN",
  malformed_id: "the leaf's URI SAN is not a valid SPIFFE workload ID",
  leaf_is_ca: "the leaf is a CA certificate",
  leaf_key_usage: "the leaf's key usage is not that of an X509-SVID",
  issuer_not_ca: "an issuing certificate is not a CA",
  issuer_without_key_cert_sign: "an issuing certificate lacks keyCertSign",
  path_length_exceeded: "a CA's pathLenConstraint is exceeded",
  wrong_eku: "the leaf's extended key usage does not allow this use",
  unknown_issuer: "the chain does not lead to a trusted root",
  bad_signature: "a signature does not verify against its named issuer",
  empty_chain: "the peer presented no certificate",
  unsupported_cert: "a certificate has extensions that cannot be processed",
};

export function describeFailure(f: { reason: VerifyFailure; detail: string }): string {
  return `peer certificate rejected (${f.reason}): ${f.detail}`;
}

export async function verifyPeerChain(
  chain: readonly Cert[],
  bundle: TrustBundle,
  opts: VerifyOptions = {},
): Promise<VerifyResult> {
  const now = opts.now ?? new Date();
  const leaf = chain[0];
  if (!leaf) return fail("empty_chain", "the peer presented no certificate");
  if (chain.length > MAX_CHAIN_LENGTH)
    return fail(
      "unknown_issuer",
      `the peer presented ${chain.length} certificates with leaf ${certName(leaf)}; ` +
        `chains longer than ${MAX_CHAIN_LENGTH} are not followed`,
    );

  const id = spiffeIdOfLeaf(leaf);
  if (!id.ok) return fail(id.reason, `leaf ${id.detail}`);

  const td = id.id.trustDomain;
  const accepted = opts.trustDomains ?? bundle.trustDomains();
  if (!accepted.includes(td))
    return fail(
      "wrong_trust_domain",
      `leaf certificate ${certName(leaf)} has the ID ${id.spiffeId}, but trust domain "${td}" is not accepted ` +
        `(accepted: ${accepted.length ? accepted.map((t) => `"${t}"`).join(", ") : "none"})`,
    );
  if (bundle.roots(td).length === 0)
    return fail(
      "wrong_trust_domain",
      `leaf certificate ${certName(leaf)} has the ID ${id.spiffeId}, but the trust bundle has no roots for "${td}"`,
    );

  const leafFailure = checkLeaf(leaf, opts.requiredEku);
  if (leafFailure) return leafFailure;

  const validated = await validatePath(chain, bundle, td, now);
  if (!validated.ok) return validated;
  return { ok: true, id: id.id, spiffeId: id.spiffeId, leaf, path: validated.path };
}

function checkLeaf(leaf: Cert, requiredEku: VerifyOptions["requiredEku"]): VerifyFailed | undefined {
  const who = `leaf certificate ${certName(leaf)}`;
  if (leaf.extensionProblem) return fail("unsupported_cert", `${who}: ${leaf.extensionProblem}`);
  const critical = unsupportedCritical(leaf.extensions);
  if (critical) return fail("unsupported_cert", `${who} has the critical extension ${critical}, which is not supported`);

  if (leaf.known.basicConstraints?.ca)
    return fail("leaf_is_ca", `${who} has basicConstraints cA=true; a CA certificate cannot identify a workload`);

  // X509-SVID §4.3: keyUsage is mandatory, with digitalSignature and without the CA bits.
  const ku = leaf.known.keyUsage;
  if (ku === undefined) return fail("leaf_key_usage", `${who} has no keyUsage extension; an X509-SVID leaf needs digitalSignature`);
  if (!(ku & KU.digitalSignature)) return fail("leaf_key_usage", `${who} lacks the digitalSignature key usage`);
  if (ku & (KU.keyCertSign | KU.cRLSign))
    return fail("leaf_key_usage", `${who} has keyCertSign or cRLSign in its key usage; only CAs may`);

  // An absent extKeyUsage allows any purpose (RFC 5280 §4.2.1.12); a present one must allow ours.
  const usages = leaf.known.extKeyUsage;
  if (usages) {
    const wanted: string[] = requiredEku ? [OID[requiredEku]] : [OID.serverAuth, OID.clientAuth];
    if (!usages.includes(OID.anyEku) && !wanted.some((w) => usages.includes(w)))
      return fail(
        "wrong_eku",
        `${who} has extended key usages ${usages.join(", ")}, which do not include ` +
          (requiredEku ?? "serverAuth or clientAuth"),
      );
  }
  return undefined;
}
