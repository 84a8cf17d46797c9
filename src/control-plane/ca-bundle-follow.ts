/**
 * The CA directory's trust bundle, followed while the control plane runs. A root rotation
 * (`mesh ca rotate --root`) writes a bundle trusting the old and the new root; a replica
 * that is running sends it at once to every sidecar, with config and with certificates,
 * while it goes on signing under the root it started with. Restarted afterwards, the
 * replicas sign and serve under the new root, which every sidecar then trusts already.
 * `--complete` drops the old root the same way. A bundle that cannot be read, or that
 * drops the root this replica signs under, is not taken: the last good one keeps being
 * served, and the problem is logged once, naming the file.
 */
import { bundleKeepsSigner, parseCertificatesAt, type LoadedCa } from "../ca/authority.ts";
import { watchFiles, type FileWatch } from "../core/file-watch.ts";
import type { Logger } from "../core/log.ts";
import type { x509 } from "../pki/x509.ts";

export interface CaBundleFollow extends FileWatch {
  /** Why the CA directory's bundle as it is now was not taken; undefined while it is in use. */
  readonly problem: string | undefined;
}

export function followCaBundle(ca: LoadedCa, use: (bundle: x509.X509Certificate[]) => void, log: Logger): CaBundleFollow {
  const path = ca.paths.bundle;
  let current = ca.bundle;
  let lastProblem: string | undefined;
  const watch = watchFiles([path], async () => {
    try {
      const next = parseCertificatesAt(path, "trust bundle");
      if (sameCertificates(next, current)) {
        lastProblem = undefined;
        return;
      }
      if (!(await bundleKeepsSigner(ca, next)))
        throw new Error(`${path}: the bundle no longer holds the root this control plane signs under; restart it to sign under the CA's current root first`);
      current = next;
      lastProblem = undefined;
      use(next);
      log.info({ bundle: path, roots: next.length }, "trust bundle reloaded; sent to sidecars with their config");
    } catch (err) {
      const problem = (err as Error).message;
      if (problem !== lastProblem) log.error({ problem }, "trust bundle not taken; the last good bundle keeps being served");
      lastProblem = problem;
    }
  });
  return {
    check: () => watch.check(),
    stop: () => watch.stop(),
    get problem() {
      return lastProblem;
    },
  };
}

function sameCertificates(a: x509.X509Certificate[], b: x509.X509Certificate[]): boolean {
  return a.length === b.length && a.every((cert, i) => cert.equal(b[i]!));
}
