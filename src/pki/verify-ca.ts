/**
 * A CA certificate (an intermediate, or a root itself) judged against a trust bundle,
 * as `mesh ca inspect` shows it: the same path validation as a peer's chain gets
 * (signatures, the validity period of every certificate on the path and of the root,
 * issuer constraints), without the rules only an X509-SVID leaf must meet.
 */
import type { Certificate } from "./certificate.ts";
import { fail, unsupportedCritical, validatePath } from "./path.ts";
import { certName } from "./san.ts";
import { parseSpiffeId } from "./spiffe.ts";
import type { TrustBundle } from "./trust-bundle.ts";
import { MAX_CHAIN_LENGTH, type VerifyFailed } from "./verify.ts";

export type CaVerifyResult =
  | { ok: true; trustDomain: string; /** the CA, intermediates, trust-bundle root */ path: Certificate[] }
  | VerifyFailed;

/** `chain` is the CA certificate first, then any certificates above it, in order. */
export async function verifyCaChain(
  chain: readonly Certificate[],
  bundle: TrustBundle,
  opts: { now?: Date } = {},
): Promise<CaVerifyResult> {
  const now = opts.now ?? new Date();
  const ca = chain[0];
  if (!ca) return fail("empty_chain", "there is no certificate to verify");
  const who = `CA certificate ${certName(ca)}`;
  if (chain.length > MAX_CHAIN_LENGTH)
    return fail("unknown_issuer", `${chain.length} certificates from ${who}; chains longer than ${MAX_CHAIN_LENGTH} are not followed`);
  if (ca.extensionProblem) return fail("unsupported_cert", `${who}: ${ca.extensionProblem}`);
  const critical = unsupportedCritical(ca.extensions);
  if (critical) return fail("unsupported_cert", `${who} has the critical extension ${critical}, which is not supported`);
  if (!ca.known.basicConstraints?.ca) return fail("issuer_not_ca", `${who} is not a CA certificate (basicConstraints cA is not true)`);

  const domains = candidateDomains(ca, bundle, who);
  if (!domains.ok) return domains;
  let firstFailure: VerifyFailed | undefined;
  for (const td of domains.trustDomains) {
    const result = await validatePath(chain, bundle, td, now, "CA certificate");
    if (result.ok) return { ok: true, trustDomain: td, path: result.path };
    firstFailure ??= result;
  }
  return firstFailure ?? fail("unknown_issuer", `${who} cannot chain to a root: the trust bundle has none`);
}

/** The CA's own trust domain (its SPIFFE trust-domain ID); a CA without a URI SAN may belong to any in the bundle. */
function candidateDomains(ca: Certificate, bundle: TrustBundle, who: string): { ok: true; trustDomains: string[] } | VerifyFailed {
  const uris = ca.known.san?.uris ?? [];
  if (uris.length === 0) return { ok: true, trustDomains: bundle.trustDomains() };
  const parsed = uris.length === 1 ? parseSpiffeId(uris[0]!) : undefined;
  if (!parsed?.ok || parsed.id.path !== "")
    return fail("malformed_id", `${who} must carry one SPIFFE trust-domain ID (spiffe://<trust-domain>) as its URI SAN, or none`);
  const td = parsed.id.trustDomain;
  if (!bundle.has(td)) return fail("wrong_trust_domain", `${who} is of trust domain "${td}", but the trust bundle has no roots for it`);
  return { ok: true, trustDomains: [td] };
}
