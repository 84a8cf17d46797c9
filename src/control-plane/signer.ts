/**
 * Signs workload certificates from CSRs: for a join token's identity at bootstrap, and
 * for the caller's own mTLS identity at renewal. The CSR may ask for nothing else.
 */
import { bundlePem, issueLeaf, type LoadedCa } from "../ca/authority.ts";
import { checkCsr, parseCsr } from "../ca/csr.ts";
import { formatSpiffeId, workloadId } from "../pki/spiffe.ts";
import { certToPem, type x509 } from "../pki/x509.ts";

export interface SignedCertificate {
  spiffeId: string;
  /** Leaf then intermediate, PEM. */
  chain: string;
  /** Trust bundle: every root, PEM. */
  bundle: string;
  notAfter: string;
  /** The leaf's serial number, hex: what the audit log names it by. */
  serial: string;
}

export interface CheckedRequest {
  spiffeId: string;
  namespace: string;
  service: string;
  publicKey: CryptoKey;
}

export class CertificateSigner {
  private bundleText: string;
  private roots: number;

  constructor(private ca: LoadedCa, private ttlMs: number) {
    this.bundleText = bundlePem(ca.bundle);
    this.roots = ca.bundle.length;
  }

  get trustDomain(): string {
    return this.ca.trustDomain;
  }

  /** Every root sidecars are to trust: the CA's bundle, as last reloaded (ca-bundle-follow.ts). */
  get bundle(): string {
    return this.bundleText;
  }

  /** How many roots the bundle holds: 2 or more during a root rotation. */
  get bundleRoots(): number {
    return this.roots;
  }

  useBundle(roots: x509.X509Certificate[]): void {
    this.bundleText = bundlePem(roots);
    this.roots = roots.length;
  }

  /** Checks the CSR against the identity; throws DataError naming what is not granted. */
  async check(csrPem: string, namespace: string, service: string): Promise<CheckedRequest> {
    const spiffeId = formatSpiffeId(workloadId(this.ca.trustDomain, namespace, service));
    const publicKey = await checkCsr(parseCsr(csrPem, "csr"), { spiffeId, service, dnsNames: [] }, "csr");
    return { spiffeId, namespace, service, publicKey };
  }

  async sign(req: CheckedRequest): Promise<SignedCertificate> {
    const { spiffeId, namespace, service, publicKey } = req;
    const leaf = await issueLeaf(this.ca.intermediate, { trustDomain: this.ca.trustDomain, namespace, service, dnsNames: [], ttlMs: this.ttlMs, publicKey });
    return {
      spiffeId,
      chain: certToPem(leaf.cert) + certToPem(this.ca.intermediate.cert),
      bundle: this.bundle,
      notAfter: leaf.cert.notAfter.toISOString(),
      serial: leaf.cert.serialNumber,
    };
  }
}
