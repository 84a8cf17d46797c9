/**
 * Where a CA rotation stands, as this replica sees it: what an operator must know before
 * each step of the runbook (README, "Root rotation, live"). Whether the CA directory's
 * root has been replaced since this replica started (it signs under the old one until
 * restarted); whether its bundle.pem was refused; and the registered sidecars (its view of
 * the store: every replica's) by the certificate they hold (sidecar-certificates.ts).
 */
import { asCertificate, parseCertificatesAt, type LoadedCa } from "../ca/authority.ts";
import { signersOf } from "../ca/signers-under-root.ts";
import type { CaBundleFollow } from "./ca-bundle-follow.ts";
import type { EndpointRecord } from "./registration.ts";
import { sidecarCertificates, type SidecarCertificates } from "./sidecar-certificates.ts";
import type { CertificateSigner } from "./signer.ts";

export interface RotationStatus {
  /** Roots sidecars are told to trust; 2 or more during a root rotation. */
  bundleRoots: number;
  /** Why the CA directory's bundle.pem, as it is now, is not the one sent. */
  bundleError?: string;
  /** The CA directory's root is not the one this replica signs under: it needs a restart. */
  rootReplaced: boolean;
  /** The CA directory's root now (subject key identifier, hex): the one every replica must sign under (GET /v1/replicas). */
  rootKeyId?: string;
  /** Registered sidecars by whose certificate they hold (absent from control planes older than it). */
  sidecarCertificates: SidecarCertificates;
}

export function rotationStatus(ca: LoadedCa, signer: CertificateSigner, follow: CaBundleFollow, endpoints: Iterable<EndpointRecord>): RotationStatus {
  const onDisk = rootOnDisk(ca);
  const rootKeyId = onDisk && asCertificate(onDisk).known.subjectKeyId;
  return {
    bundleRoots: signer.bundleRoots,
    ...(follow.problem !== undefined && { bundleError: follow.problem }),
    rootReplaced: onDisk?.equal(ca.root) === false,
    ...(rootKeyId !== undefined && { rootKeyId }),
    sidecarCertificates: sidecarCertificates(endpoints, signersOf(ca)),
  };
}

/** The CA directory's root.pem now; undefined if it cannot be read (bundleError, or the CA's own load, says why). */
function rootOnDisk(ca: LoadedCa) {
  try {
    return parseCertificatesAt(ca.paths.rootCert, "root certificate")[0];
  } catch {
    return undefined;
  }
}
