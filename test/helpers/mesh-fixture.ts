/** A small mesh on loopback for tests: a CA, issued certificates, echo services, proxies. */
import { afterAll, beforeAll } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { mesh, tempDir } from "./cli.ts";
import { startMesh, stopAll, type MeshProcess, type StartOptions } from "./procs.ts";

export interface EchoService {
  server: ReturnType<typeof Bun.serve>;
  url: string;
  hits: number;
}

/** A service that answers with who called it, as its proxy told it. */
export function echoService(name: string): EchoService {
  const svc: EchoService = { server: undefined as never, url: "", hits: 0 };
  svc.server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    async fetch(req) {
      svc.hits++;
      const body = req.body ? await req.text() : "";
      return Response.json({ service: name, caller: req.headers.get("x-mesh-client-id"), path: new URL(req.url).pathname, method: req.method, body });
    },
  });
  svc.url = `http://127.0.0.1:${svc.server.port}`;
  return svc;
}

/** Echo services a test file starts without a MeshFixture, stopped together after it. */
export class Echoes {
  private readonly list: EchoService[] = [];

  echo(name: string): EchoService {
    const s = echoService(name);
    this.list.push(s);
    return s;
  }

  stop(): void {
    for (const s of this.list.splice(0)) s.server.stop(true);
  }
}

export class MeshFixture {
  readonly tmp = tempDir("mesh-proxy-");
  readonly ca = join(this.tmp.path, "ca");
  private servers: EchoService[] = [];

  async init(trustDomain = "mesh.local"): Promise<this> {
    const r = await mesh("ca", "init", "--trust-domain", trustDomain, "--out", this.ca);
    if (r.code !== 0) throw new Error(r.err);
    return this;
  }

  async issue(service: string, caDir = this.ca): Promise<string> {
    const out = join(this.tmp.path, "certs", service);
    const r = await mesh("ca", "issue", "--service", service, "--ca-dir", caDir, "--out", out, "--force");
    if (r.code !== 0) throw new Error(r.err);
    return out;
  }

  echo(name: string): EchoService {
    const s = echoService(name);
    this.servers.push(s);
    return s;
  }

  /** A service with its own behaviour (slow, failing…); counts hits like echo. */
  service(handler: (req: Request) => Response | Promise<Response>): EchoService {
    const svc: EchoService = { server: undefined as never, url: "", hits: 0 };
    svc.server = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      fetch(req) {
        svc.hits++;
        return handler(req);
      },
    });
    svc.url = `http://127.0.0.1:${svc.server.port}`;
    this.servers.push(svc);
    return svc;
  }

  /** Writes a static config: each service with the inbound ports of its proxies. */
  config(name: string, services: Record<string, number[]>, extra = ""): string {
    const docs = Object.entries(services).map(
      ([svc, ports]) =>
        `apiVersion: mesh.dev/v1alpha1\nkind: Service\nmetadata:\n  name: ${svc}\nspec:\n  ports:\n    - name: http\n      port: 80\n  endpoints:\n` +
        ports.map((p) => `    - address: 127.0.0.1\n      port: ${p}\n`).join(""),
    );
    const path = join(this.tmp.path, `${name}.yaml`);
    writeFileSync(path, docs.join("---\n") + extra);
    return path;
  }

  /** Writes `docs` (YAML documents) as one config file; its path. */
  documents(name: string, docs: string[]): string {
    const path = join(this.tmp.path, `${name}.yaml`);
    writeFileSync(path, docs.join("\n---\n") + "\n");
    return path;
  }

  async proxy(service: string, upstream: string, config?: string, extra: string[] = [], opts: StartOptions = {}): Promise<MeshProcess & { ports: { inbound: number; outbound: number; admin: number } }> {
    const certs = join(this.tmp.path, "certs", service);
    const args = ["proxy", "--service", service, "--upstream", upstream, "--certs-dir", certs,
      "--inbound", "127.0.0.1:0", "--outbound", "127.0.0.1:0", "--admin", "127.0.0.1:0", ...(config ? ["--config", config] : []), ...extra];
    const p = await startMesh(args, opts);
    const r = p.ready as { inbound: number; outbound: number; admin: number };
    return { ...p, ports: { inbound: r.inbound, outbound: r.outbound, admin: r.admin } };
  }

  async close(): Promise<void> {
    try {
      await stopAll();
    } finally {
      for (const s of this.servers) s.server.stop(true);
      this.tmp.cleanup();
    }
  }
}

/** A Service whose port 80 is served at `targetPort`, declared `protocol` (none when undefined), with static `endpoints` on 127.0.0.1. */
export function serviceDoc(name: string, targetPort: number, protocol: string | undefined, endpoints: number[] = []): string {
  return [
    "apiVersion: mesh.dev/v1alpha1",
    "kind: Service",
    `metadata: { name: ${name} }`,
    "spec:",
    `  ports: [{ name: http, port: 80, targetPort: ${targetPort}${protocol ? `, protocol: ${protocol}` : ""} }]`,
    ...(endpoints.length > 0 ? ["  endpoints:", ...endpoints.map((p) => `    - { address: 127.0.0.1, port: ${p} }`)] : []),
  ].join("\n");
}

export async function metricValue(adminPort: number, name: string, labels: Record<string, string> = {}): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
  let total = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith(name + "{") && !line.startsWith(name + " ")) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) total += Number(line.split(" ").pop());
  }
  return total;
}

/** This test file's fixture: a CA and certificates for `services` before its tests, every process and file removed after. */
export function fixtureFor(...services: string[]): MeshFixture {
  const fx = new MeshFixture();
  beforeAll(async () => {
    await fx.init();
    for (const service of services) await fx.issue(service);
  });
  afterAll(() => fx.close());
  return fx;
}
