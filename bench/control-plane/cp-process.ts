/** A real `mesh control-plane` process on loopback, and a client for its admin API. */
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { MeshCommand } from "../mesh-command.ts";
import { spawn, waitForLine, type Child } from "../procs.ts";

export interface ProxyItem {
  namespace: string;
  service: string;
  endpoint?: string;
  acked?: string;
  latest: string;
}

export interface ControlPlane {
  child: Child;
  ports: { api: number; bootstrap: number; admin: number };
  bundlePem: string;
  trustDomain: string;
  apply(manifests: Record<string, unknown>[]): Promise<void>;
  joinToken(service: string): Promise<string>;
  proxies(): Promise<ProxyItem[]>;
}

export async function startControlPlane(mesh: MeshCommand, dir: string, leaseTtl: string): Promise<ControlPlane> {
  const dataDir = join(dir, "cp-data");
  const caDir = join(dir, "ca");
  const policies = join(dir, "policies"); // empty: never the repo's ./policies
  mkdirSync(policies, { recursive: true });
  const child = spawn("control-plane", [
    ...mesh.argv, "control-plane", "--data-dir", dataDir, "--ca-dir", caDir, "--policies", policies,
    "--api", "127.0.0.1:0", "--bootstrap", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--lease-ttl", leaseTtl,
  ]);
  const line = await waitForLine(child, (l) => l.startsWith("{") && l.includes('"ready"'), 30_000);
  const ready = JSON.parse(line) as { api: number; bootstrap: number; admin: number; trustDomain: string; bundle: string };
  const token = readFileSync(join(dataDir, "admin-token"), "utf8").trim();

  const admin = async (method: string, path: string, body?: unknown): Promise<unknown> => {
    const res = await fetch(`http://127.0.0.1:${ready.admin}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(120_000),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`admin ${method} ${path}: ${res.status} ${text.slice(0, 500)}`);
    return JSON.parse(text);
  };
  return {
    child,
    ports: { api: ready.api, bootstrap: ready.bootstrap, admin: ready.admin },
    bundlePem: readFileSync(ready.bundle, "utf8"),
    trustDomain: ready.trustDomain,
    async apply(manifests) {
      await admin("PUT", "/v1/manifests", { documents: manifests.map((manifest, i) => ({ source: `bench#${i}`, manifest })) });
    },
    async joinToken(service) {
      return ((await admin("POST", "/v1/join-tokens", { service, namespace: "default" })) as { token: string }).token;
    },
    async proxies() {
      return ((await admin("GET", "/v1/proxies")) as { items: ProxyItem[] }).items;
    },
  };
}
