/** The demo's control plane: a `mesh control-plane` child on loopback ports, and its admin API. */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { MeshError } from "../core/errors.ts";
import type { Children } from "./children.ts";
import { meshArgv } from "./self.ts";

export interface DemoControlPlane {
  pid: number;
  ports: { api: number; bootstrap: number; admin: number };
  adminUrl: string;
  adminTokenFile: string;
  bundle: string;
  trustDomain: string;
  apply(manifests: Record<string, unknown>[]): Promise<void>;
  /** A join token for `service`, written 0600 to `file`. */
  joinTokenFile(service: string, file: string): Promise<string>;
}

/** Every port is chosen by the OS, so a mesh already running on the defaults is left alone. */
export async function startDemoControlPlane(children: Children, dir: string): Promise<DemoControlPlane> {
  const dataDir = join(dir, "data");
  const caDir = join(dir, "ca");
  const policies = join(dir, "policies");
  mkdirSync(policies, { recursive: true });
  const child = await children.start("control plane", [
    ...meshArgv(), "control-plane", "--data-dir", dataDir, "--ca-dir", caDir, "--policies", policies,
    "--api", "127.0.0.1:0", "--bootstrap", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--log-level", "warn",
  ]);
  const ready = child.ready as { api: number; bootstrap: number; admin: number; trustDomain: string; bundle: string };
  const adminTokenFile = join(dataDir, "admin-token");
  const token = readFileSync(adminTokenFile, "utf8").trim();
  const adminUrl = `http://127.0.0.1:${ready.admin}`;
  const admin = async <T>(method: string, path: string, body: unknown): Promise<T> => {
    const res = await fetch(adminUrl + path, {
      method,
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    const text = await res.text();
    if (!res.ok) throw new MeshError(`control plane ${method} ${path}: ${res.status} ${text.slice(0, 500)}`);
    return JSON.parse(text) as T;
  };
  return {
    pid: child.pid,
    ports: { api: ready.api, bootstrap: ready.bootstrap, admin: ready.admin },
    adminUrl,
    adminTokenFile,
    bundle: ready.bundle,
    trustDomain: ready.trustDomain,
    async apply(manifests) {
      await admin("PUT", "/v1/manifests", { documents: manifests.map((manifest, i) => ({ source: `mesh-demo#${i}`, manifest })) });
    },
    async joinTokenFile(service, file) {
      const { token: joinToken } = await admin<{ token: string }>("POST", "/v1/join-tokens", { service });
      writeFileSync(file, joinToken + "\n", { mode: 0o600 });
      return file;
    },
  };
}
