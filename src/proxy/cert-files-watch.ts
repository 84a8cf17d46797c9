/**
 * A sidecar without a control plane reads its certificate from files that something else
 * renews: `mesh ca issue` from a timer, cert-manager's CSI driver, spiffe-helper, a
 * Kubernetes Secret volume. Without this it would serve until the certificate ended and
 * then fail every mTLS call.
 *
 * The files are watched (../core/file-watch.ts). A changed set must pass the checks of
 * start-up (the key matches the leaf, the chain verifies to the bundle, and validity) and
 * name the same SPIFFE ID; then it replaces the running one. Otherwise the failure is
 * logged once, naming the file and what is wrong, and the last good set keeps serving.
 * Writers put the files down one at a time, so a half-written set (a new chain with the
 * old key) fails the check until the rest arrives.
 */
import type { Logger } from "../core/log.ts";
import { readTextFile } from "../core/files.ts";
import { watchFiles, type FileWatch } from "../core/file-watch.ts";
import { workloadCertsFromPem, type WorkloadCerts } from "./certs.ts";

export function watchCertFiles(first: WorkloadCerts, use: (next: WorkloadCerts) => void, log: Logger): FileWatch {
  let current = first;
  let lastProblem: string | undefined;
  const { files } = first;
  return watchFiles([files.chain, files.key, files.bundle], async () => {
    try {
      const pem = { chainPem: readTextFile(files.chain, "certificate chain"), keyPem: readTextFile(files.key, "private key"), bundlePem: readTextFile(files.bundle, "trust bundle") };
      if (pem.chainPem === current.chainPem && pem.keyPem === current.keyPem && pem.bundlePem === current.bundleText) return;
      const next = await workloadCertsFromPem(pem, files);
      if (next.spiffeId !== current.spiffeId) throw new Error(`${files.chain}: the certificate is for ${next.spiffeId}, and this sidecar is ${current.spiffeId}`);
      use(next);
      current = next;
      lastProblem = undefined;
      log.info({ identity: next.spiffeId, notAfter: next.notAfter.toISOString(), files }, "certificate reloaded");
    } catch (err) {
      const problem = (err as Error).message;
      if (problem !== lastProblem) log.warn({ problem, notAfter: current.notAfter.toISOString() }, "certificate files not taken; the last good certificate keeps serving");
      lastProblem = problem;
    }
  });
}
