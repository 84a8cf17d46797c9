/**
 * First certificate: make a key here, send only a CSR and the join token to the
 * bootstrap port (TLS, server verified as the control plane against the trust bundle
 * the operator gave), and keep the result in the certs directory so a restart reuses
 * it rather than needing a new token.
 */
import { writeFileSet } from "../../core/files.ts";
import { MeshError } from "../../core/errors.ts";
import { controlPlaneId } from "../../control-plane/well-known.ts";
import type { SignedCertificate } from "../../control-plane/signer.ts";
import { formatSpiffeId, workloadId } from "../../pki/spiffe.ts";
import { exportPrivateKeyPem, generateKeyPair } from "../../pki/keys.ts";
import { decodePem, encodePem } from "../../pki/pem.ts";
import { workloadPaths } from "../../ca/layout.ts";
import { workloadCertsFromPem, type WorkloadCerts } from "../certs.ts";
import { expectPeer } from "../destinations.ts";
import { makeCsr } from "./csr.ts";
import { Backoff } from "./backoff.ts";

/** Tries of a bootstrap request that did not reach the control plane (refused, reset, timed out); an answer is never retried. */
const REACH_ATTEMPTS = 5;

export interface BootstrapRequest {
  url: string;
  token: string;
  /** PEM roots that the control plane's certificate must chain to. */
  bundlePem: string;
  trustDomain: string;
  namespace: string;
  service: string;
  certsDir: string;
}

/** Key, CSR, signed chain: everything the bootstrap and renewal paths share. */
export async function requestCertificate(
  spiffeId: string,
  service: string,
  send: (csr: string) => Promise<SignedCertificate>,
): Promise<{ keyPem: string; signed: SignedCertificate }> {
  const keys = await generateKeyPair();
  const signed = await send(await makeCsr(keys, spiffeId, service));
  return { keyPem: await exportPrivateKeyPem(keys.privateKey), signed };
}

export async function saveCertificate(certsDir: string, keyPem: string, signed: SignedCertificate): Promise<WorkloadCerts> {
  const p = workloadPaths(certsDir);
  const first = decodePem(signed.chain).find((b) => b.type === "CERTIFICATE");
  if (!first) throw new MeshError("the control plane answered with no certificate");
  const leaf = encodePem("CERTIFICATE", first.der);
  const certs = await workloadCertsFromPem({ chainPem: signed.chain, keyPem, bundlePem: signed.bundle }, { chain: p.chain, key: p.key, bundle: p.bundle });
  writeFileSet(
    [
      { path: p.key, content: keyPem, secret: true },
      { path: p.cert, content: leaf },
      { path: p.chain, content: signed.chain },
      { path: p.bundle, content: signed.bundle },
    ],
    { force: true },
  );
  return certs;
}

export async function bootstrap(req: BootstrapRequest): Promise<WorkloadCerts> {
  const spiffeId = formatSpiffeId(workloadId(req.trustDomain, req.namespace, req.service));
  const { keyPem, signed } = await requestCertificate(spiffeId, req.service, async (csr) => {
    let res: Response | undefined;
    // A connection lost on its way (the control plane restarting, or rotating its listener's
    // certificate, which resets connections still queued) is tried again; an answer is final.
    const backoff = new Backoff();
    for (let attempt = 1; res === undefined; attempt++) {
      try {
        res = await fetch(new URL("/v1/bootstrap", req.url), {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ token: req.token, csr }),
          tls: { ca: req.bundlePem, rejectUnauthorized: true, checkServerIdentity: expectPeer(controlPlaneId(req.trustDomain), req.trustDomain) as never },
        });
      } catch (err) {
        if (attempt >= REACH_ATTEMPTS) throw new MeshError(`cannot reach the control plane's bootstrap port ${req.url} (${attempt} tries): ${(err as Error).message}`);
        await Bun.sleep(backoff.next());
      }
    }
    const body = (await res.json().catch(() => ({}))) as SignedCertificate & { error?: string };
    if (!res.ok) throw new MeshError(`bootstrap refused (${res.status}): ${body.error ?? "no reason given"}`);
    return body;
  });
  if (signed.spiffeId !== spiffeId) throw new MeshError(`control plane signed ${signed.spiffeId}, expected ${spiffeId}`);
  return saveCertificate(req.certsDir, keyPem, signed);
}
