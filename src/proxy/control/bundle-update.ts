/**
 * The trust bundle the control plane sends with every config version. A root rotation
 * reaches sidecars this way, not at their next renewal: `mesh ca rotate --root` adds the
 * new root, and every sidecar must trust it before any peer presents a certificate under
 * it; `--complete` drops the old one, and a sidecar must stop trusting it then too.
 */
import { TrustBundle } from "../../pki/trust-bundle.ts";
import { workloadCertsFromPem, type WorkloadCerts } from "../certs.ts";

export type BundleUpdate =
  | { kind: "same" }
  /** The sidecar's own certificate under the new bundle: take it. */
  | { kind: "take"; certs: WorkloadCerts; roots: number }
  /** The bundle no longer holds the root of the sidecar's own certificate: renew (the new certificate comes with the bundle). */
  | { kind: "renew"; reason: string }
  /** Not a bundle the sidecar can use at all: the config version is refused. */
  | { kind: "refused"; reason: string };

export async function bundleUpdate(certs: WorkloadCerts, bundleText: string): Promise<BundleUpdate> {
  if (bundleText === certs.bundleText) return { kind: "same" };
  const source = "the config's trust bundle";
  let bundle: TrustBundle;
  try {
    bundle = TrustBundle.fromPem(bundleText, undefined, source);
  } catch (err) {
    return { kind: "refused", reason: (err as Error).message };
  }
  const roots = bundle.roots(certs.trustDomain).length;
  if (roots === 0) return { kind: "refused", reason: `${source} holds no root for ${certs.trustDomain}, this sidecar's trust domain` };
  try {
    // The key and chain are the ones in use: only the chain's verification against the new roots can fail here.
    const next = await workloadCertsFromPem({ chainPem: certs.chainPem, keyPem: certs.keyPem, bundlePem: bundleText }, certs.files);
    return { kind: "take", certs: next, roots };
  } catch (err) {
    return { kind: "renew", reason: (err as Error).message };
  }
}
