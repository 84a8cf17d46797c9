/** A control plane for tests: a real `mesh control-plane` process and an admin client for it. */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll } from "bun:test";
import { startMesh, stopAll, type MeshProcess } from "./procs.ts";
import { tempDir } from "./cli.ts";
import { echoService, type EchoService } from "./mesh-fixture.ts";

export interface TestControlPlane extends MeshProcess {
  ports: { api: number; bootstrap: number; admin: number };
  caDir: string;
  bundle: string;
  adminToken: string;
  /** Flags for a CLI command to reach this control plane's admin API (`mesh check`, `mesh ca rotate --complete`). */
  adminFlags: string[];
  admin(method: string, path: string, body?: unknown, token?: string): Promise<Response>;
  apply(...manifests: Record<string, unknown>[]): Promise<void>;
  joinToken(service: string, namespace?: string): Promise<string>;
  /** Flags for `mesh proxy` to follow this control plane, bootstrapping with a fresh join token. */
  proxyFlags(service: string, dir: string): Promise<string[]>;
}

/**
 * `ports` pins the listeners (to come back where proxies expect it); default: any free port.
 * `wrap`: a command the process runs under (e.g. setpriv, to give it a group of its own).
 */
export async function startControlPlane(dir: string, extra: string[] = [], name = "cp", ports?: TestControlPlane["ports"], wrap?: string[]): Promise<TestControlPlane> {
  const dataDir = join(dir, `${name}-data`);
  const caDir = join(dir, "ca");
  const policies = join(dir, `${name}-policies`);
  mkdirSync(policies, { recursive: true });
  const p = await startMesh([
    "control-plane", "--data-dir", dataDir, "--ca-dir", caDir, "--policies", policies,
    "--api", `127.0.0.1:${ports?.api ?? 0}`, "--bootstrap", `127.0.0.1:${ports?.bootstrap ?? 0}`, "--admin", `127.0.0.1:${ports?.admin ?? 0}`,
    "--lease-ttl", "2s", ...extra,
  ], wrap ? { wrap } : undefined);
  const bound = p.ready as unknown as TestControlPlane["ports"];
  const adminToken = readFileSync(join(dataDir, "admin-token"), "utf8").trim();
  const admin = (method: string, path: string, body?: unknown, token = adminToken) =>
    fetch(`http://127.0.0.1:${bound.admin}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
      // A store outage holds an answer for its 15 s retry window; a hung control plane must still end the call.
      signal: AbortSignal.timeout(30_000),
    });
  const cp: TestControlPlane = {
    ...p,
    ports: bound,
    caDir,
    bundle: join(caDir, "bundle.pem"),
    adminToken,
    adminFlags: ["--admin-url", `http://127.0.0.1:${bound.admin}`, "--admin-token-file", join(dataDir, "admin-token")],
    admin,
    async apply(...manifests) {
      const res = await admin("PUT", "/v1/manifests", { documents: manifests.map((manifest, i) => ({ source: `test#${i}`, manifest })) });
      if (res.status !== 200) throw new Error(`apply failed: ${res.status} ${await res.text()}`);
    },
    async joinToken(service, namespace = "default") {
      const res = await admin("POST", "/v1/join-tokens", { service, namespace });
      if (res.status !== 200) throw new Error(`join token: ${res.status} ${await res.text()}`);
      return ((await res.json()) as { token: string }).token;
    },
    async proxyFlags(service, dir) {
      const tokenFile = join(dir, `${service}-${crypto.randomUUID()}.token`);
      writeFileSync(tokenFile, await cp.joinToken(service));
      return [
        "--control-plane", `https://127.0.0.1:${bound.api}`, "--bootstrap-url", `https://127.0.0.1:${bound.bootstrap}`,
        "--join-token-file", tokenFile, "--ca", cp.bundle,
      ];
    },
  };
  return cp;
}

export function serviceManifest(name: string, namespace = "default"): Record<string, unknown> {
  return { apiVersion: "mesh.dev/v1alpha1", kind: "Service", metadata: { name, namespace }, spec: { ports: [{ name: "http", port: 80 }] } };
}

export { eventually } from "./wait.ts";

export type Sidecar = MeshProcess & { ports: { inbound: number; outbound: number; admin: number } };

/** A `mesh proxy` following `cp`, bootstrapped with a fresh join token, its certificates in its own directory. */
export async function cpSidecar(cp: TestControlPlane, dir: string, service: string, instance: string, upstream: string, extra: string[] = []): Promise<Sidecar> {
  const p = await startMesh([
    "proxy", "--service", service, "--upstream", upstream, "--certs-dir", join(dir, "certs", `${service}-${instance}`),
    "--inbound", "127.0.0.1:0", "--outbound", "127.0.0.1:0", "--admin", "127.0.0.1:0", ...(await cp.proxyFlags(service, dir)), ...extra,
  ]);
  return { ...p, ports: p.ready as Sidecar["ports"] };
}

/** This test file's control plane, given `manifests` before its tests; every process, echo and file gone after. */
export function controlPlaneFixture(prefix: string, ...manifests: Record<string, unknown>[]) {
  return controlPlaneFixtureWith(prefix, [], ...manifests);
}

/** controlPlaneFixture, the control plane started with `args` (e.g. a short --cert-ttl). */
export function controlPlaneFixtureWith(prefix: string, args: string[], ...manifests: Record<string, unknown>[]) {
  const tmp = tempDir(prefix);
  const echoes: EchoService[] = [];
  const fx = {
    tmp,
    cp: undefined as unknown as TestControlPlane,
    /** A sidecar of `service` following the control plane, in front of its own echo service (named `service-instance`). */
    async sidecar(service: string, instance: string, extra: string[] = []) {
      const echo = echoService(`${service}-${instance}`);
      echoes.push(echo);
      return { ...(await cpSidecar(fx.cp, tmp.path, service, instance, echo.url, extra)), echo };
    },
  };
  beforeAll(async () => {
    fx.cp = await startControlPlane(tmp.path, args);
    await fx.cp.apply(...manifests);
  });
  afterAll(async () => {
    try {
      await stopAll();
    } finally {
      for (const e of echoes) e.server.stop(true);
      tmp.cleanup();
    }
  });
  return fx;
}
