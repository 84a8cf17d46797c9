/**
 * What a certificate the control plane signed must be before the sidecar takes it, at
 * bootstrap and at every renewal: this workload's own SPIFFE ID (so its trust domain
 * too), chained to roots the sidecar trusts already. An answer's chain verifying against
 * the answer's own bundle proves only that the two agree: taken on that alone, a wrong
 * answer would change who the sidecar is, or which roots it trusts, so that it could no
 * longer reach its own control plane nor be reached by its peers.
 */
import { readCertificates } from "../../pki/load.ts";
import { sameBytes } from "../../pki/certificate.ts";
import { certName } from "../../pki/san.ts";
import { verifyPeerChain, type TrustBundle } from "../../pki/verify.ts";
import type { WorkloadCerts } from "../certs.ts";

/** Who the sidecar is, and the bundle whose roots of its trust domain it trusts now. */
export interface TrustedIdentity {
  spiffeId: string;
  trustDomain: string;
  bundle: TrustBundle;
}

/**
 * Why `next` cannot replace `trusted`, or undefined. Its chain must lead to a root trusted
 * now, or its bundle must keep every such root still valid: a root rotation adds the new
 * root beside the old ones before signing under it (ca/rotate.ts), and drops the old ones
 * only once every leaf chains to the new one, which the sidecar has then taken.
 */
export async function identityProblem(next: WorkloadCerts, trusted: TrustedIdentity, now = new Date()): Promise<string | undefined> {
  if (next.spiffeId !== trusted.spiffeId) {
    const domain = next.trustDomain === trusted.trustDomain ? "" : ` (trust domain ${next.trustDomain}, not ${trusted.trustDomain})`;
    return `the certificate is for ${next.spiffeId}${domain}, and this sidecar is ${trusted.spiffeId}`;
  }
  const td = trusted.trustDomain;
  const chain = readCertificates(next.chainPem, next.files.chain, "certificate chain");
  const verdict = await verifyPeerChain(chain, trusted.bundle, { trustDomains: [td], now });
  if (verdict.ok) return undefined;
  const held = trusted.bundle.roots(td).filter((root) => root.notAfter > now);
  const dropped = held.filter((root) => !next.bundle.roots(td).some((kept) => sameBytes(kept.der, root.der)));
  if (held.length > 0 && dropped.length === 0) return undefined;
  const bundle = held.length === 0 ? `no root this sidecar trusts for ${td} is still valid` : `the bundle sent with it lacks ${dropped.map(certName).join(", ")}`;
  return `the certificate does not chain to a root this sidecar trusts for ${td} (${verdict.detail}), and ${bundle}`;
}
