/**
 * Certificates for every pair, from mesh's own CA: nginx and haproxy use the very same
 * key.pem, chain.pem and bundle.pem, so every pair verifies the same chain.
 */
import { join } from "node:path";
import { runMeshSync, type MeshCommand } from "./mesh-command.ts";

export const TRUST_DOMAIN = "mesh.local";

/** Issues one workload certificate per service; returns service → certs directory. */
export function issueCerts(mesh: MeshCommand, dir: string, services: string[]): Record<string, string> {
  const ca = join(dir, "ca");
  runMeshSync(mesh, ["ca", "init", "--trust-domain", TRUST_DOMAIN, "--out", ca]);
  const dirs: Record<string, string> = {};
  for (const service of services) {
    dirs[service] = join(dir, service);
    runMeshSync(mesh, ["ca", "issue", "--service", service, "--ca-dir", ca, "--out", dirs[service]!, "--force"]);
  }
  return dirs;
}
