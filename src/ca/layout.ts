/** Where a CA directory keeps what: one place, so every command agrees. */
import { join } from "node:path";

export interface CaPaths {
  dir: string;
  rootCert: string;
  rootKey: string;
  intermediateCert: string;
  intermediateKey: string;
  /** The trust bundle: every root peers should trust (two during a root rotation). */
  bundle: string;
  /** Superseded CA certificates, kept for audit; their keys are not kept, so nothing more can be signed with them. */
  retired: string;
}

export function caPaths(dir: string): CaPaths {
  return {
    dir,
    rootCert: join(dir, "root.pem"),
    rootKey: join(dir, "root.key"),
    intermediateCert: join(dir, "intermediate.pem"),
    intermediateKey: join(dir, "intermediate.key"),
    bundle: join(dir, "bundle.pem"),
    retired: join(dir, "retired"),
  };
}

/** What `mesh ca issue --out DIR` writes and `mesh proxy --certs-dir DIR` reads. */
export interface WorkloadPaths {
  key: string;
  cert: string;
  chain: string;
  bundle: string;
}

export function workloadPaths(dir: string): WorkloadPaths {
  return {
    key: join(dir, "key.pem"),
    cert: join(dir, "cert.pem"),
    chain: join(dir, "chain.pem"),
    bundle: join(dir, "bundle.pem"),
  };
}
