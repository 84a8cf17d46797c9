/**
 * A sidecar without a control plane reads its certificate from files that something else
 * renews: `mesh ca issue` from a timer, cert-manager's CSI driver, spiffe-helper, a
 * Kubernetes Secret volume. Without this it would serve until the certificate ended and
 * then fail every mTLS call.
 *
 * The files' directories are watched (a Secret volume swaps a symlink in the directory),
 * and read again every 30 s and on SIGHUP, for what a watch misses (a file behind a
 * symlink elsewhere, a network filesystem). A changed set must pass the checks of start-up
 * (the key matches the leaf, the chain verifies to the bundle, and validity) and name the
 * same SPIFFE ID; then it replaces the running one. Otherwise the failure is logged once,
 * naming the file and what is wrong, and the last good set keeps serving. Writers put the
 * files down one at a time, so a half-written set (a new chain with the old key) fails
 * the check until the rest arrives.
 */
import { watch, type FSWatcher } from "node:fs";
import { dirname } from "node:path";
import type { Logger } from "../core/log.ts";
import { readTextFile } from "../core/files.ts";
import { workloadCertsFromPem, type WorkloadCerts } from "./certs.ts";

/** How often the files are read again regardless of the watch. */
const RECHECK_MS = 30_000;
/** Writers touch several files in quick succession: one read after they settle. */
const SETTLE_MS = 250;

export interface CertFilesWatch {
  /** Reads the files now (SIGHUP); settles once the set was taken or refused. */
  check(): Promise<void>;
  stop(): void;
}

export function watchCertFiles(first: WorkloadCerts, use: (next: WorkloadCerts) => void, log: Logger): CertFilesWatch {
  let current = first;
  let lastProblem: string | undefined;
  let running: Promise<void> | undefined;
  let again = false;
  let settle: Timer | undefined;

  const readAndUse = async (): Promise<void> => {
    const { files } = current;
    try {
      const pem = { chainPem: readTextFile(files.chain, "certificate chain"), keyPem: readTextFile(files.key, "private key"), bundlePem: readTextFile(files.bundle, "trust bundle") };
      if (pem.chainPem === current.chainPem && pem.keyPem === current.keyPem && pem.bundlePem === current.bundlePem) return;
      const next = await workloadCertsFromPem(pem, files);
      if (next.spiffeId !== current.spiffeId) throw new Error(`${files.chain}: the certificate is for ${next.spiffeId}, and this sidecar is ${current.spiffeId}`);
      current = next;
      lastProblem = undefined;
      use(next);
      log.info({ identity: next.spiffeId, notAfter: next.notAfter.toISOString(), files }, "certificate reloaded");
    } catch (err) {
      const problem = (err as Error).message;
      if (problem !== lastProblem) log.warn({ problem, notAfter: current.notAfter.toISOString() }, "certificate files not taken; the last good certificate keeps serving");
      lastProblem = problem;
    }
  };
  const check = (): Promise<void> => {
    if (running !== undefined) {
      again = true;
      return running;
    }
    running = (async () => {
      do {
        again = false;
        await readAndUse();
      } while (again);
      running = undefined;
    })();
    return running;
  };

  const soon = () => {
    clearTimeout(settle);
    settle = setTimeout(() => void check(), SETTLE_MS);
  };
  const watchers: FSWatcher[] = [];
  for (const dir of new Set([first.files.chain, first.files.key, first.files.bundle].map((f) => dirname(f)))) {
    try {
      const w = watch(dir, soon);
      w.on("error", () => w.close());
      watchers.push(w);
    } catch {
      // Unwatchable (gone, no inotify): the periodic read still finds changes.
    }
  }
  const recheck = setInterval(() => void check(), RECHECK_MS);
  recheck.unref();

  return {
    check,
    stop() {
      clearInterval(recheck);
      clearTimeout(settle);
      for (const w of watchers) w.close();
    },
  };
}
