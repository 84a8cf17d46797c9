/** The control plane's own certificate and the identities sidecars expect of it. */
import { issueLeaf, type LoadedCa } from "../ca/authority.ts";
import { certToPem, exportPrivateKeyPem, generateKeyPair } from "../pki/x509.ts";
import { CONTROL_PLANE_SERVICE, SYSTEM_NAMESPACE } from "./well-known.ts";

export { CONTROL_PLANE_SERVICE, SYSTEM_NAMESPACE, controlPlaneId } from "./well-known.ts";

export interface ServingCert {
  chainPem: string;
  keyPem: string;
  notAfter: Date;
}

/** A fresh key and certificate for this replica; the key never leaves the process. */
export async function issueServingCert(ca: LoadedCa, ttlMs: number): Promise<ServingCert> {
  const keys = await generateKeyPair();
  const leaf = await issueLeaf(ca.intermediate, {
    trustDomain: ca.trustDomain,
    namespace: SYSTEM_NAMESPACE,
    service: CONTROL_PLANE_SERVICE,
    dnsNames: [],
    ttlMs,
    publicKey: keys.publicKey,
  });
  return { chainPem: certToPem(leaf.cert) + certToPem(ca.intermediate.cert), keyPem: await exportPrivateKeyPem(keys.privateKey), notAfter: leaf.cert.notAfter };
}
