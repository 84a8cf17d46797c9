/**
 * Where a CA rotation stands, as this replica sees it: what an operator must know before
 * each step of the runbook (README, "Root rotation, live"). Whether the CA directory's
 * root has been replaced since this replica started (it signs under the old one until
 * restarted); whether its bundle.pem was refused; and how many connected sidecars hold a
 * certificate of the intermediate it signs with now, against an earlier one (those have
 * not renewed since: `--complete` would leave them unable to).
 */
import { asCertificate, parseCertificatesAt, type LoadedCa } from "../ca/authority.ts";
import type { TlsBridge } from "../proxy/transport/tls-bridge.ts";
import type { CaBundleFollow } from "./ca-bundle-follow.ts";
import type { CertificateSigner } from "./signer.ts";

export interface RotationStatus {
  /** Roots sidecars are told to trust; 2 or more during a root rotation. */
  bundleRoots: number;
  /** Why the CA directory's bundle.pem, as it is now, is not the one sent. */
  bundleError?: string;
  /** The CA directory's root is not the one this replica signs under: it needs a restart. */
  rootReplaced: boolean;
  /** Identified API connections by whose certificate they carry: this replica's signing intermediate's, or an earlier one's. */
  sidecarCertificates: { currentIntermediate: number; earlier: number };
}

export function rotationStatus(ca: LoadedCa, signer: CertificateSigner, follow: CaBundleFollow, bridge: TlsBridge): RotationStatus {
  const { signed, other } = bridge.identifiedBy(asCertificate(ca.intermediate.cert).known.subjectKeyId);
  return {
    bundleRoots: signer.bundleRoots,
    ...(follow.problem !== undefined && { bundleError: follow.problem }),
    rootReplaced: rootOnDisk(ca)?.equal(ca.root) === false,
    sidecarCertificates: { currentIntermediate: signed, earlier: other },
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
