/**
 * The demo's sidecars: one `mesh proxy` child per service instance, each making its own
 * key and trading a single-use join token for its certificate, all listeners on
 * OS-chosen loopback ports.
 */
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { MeshError } from "../core/errors.ts";
import type { Children } from "./children.ts";
import type { DemoControlPlane } from "./control-plane.ts";
import { meshArgv } from "./self.ts";

export interface InstanceSpec {
  /** Unique label: the service name, or e.g. pricing-2 for a second instance. */
  instance: string;
  service: string;
  upstreamPort: number;
  /** Services it calls: what discovery must show it before traffic starts. */
  calls?: string[];
  healthPath?: string;
}

export interface DemoSidecar extends InstanceSpec {
  pid: number;
  identity: string;
  ports: { inbound: number; outbound: number; admin: number };
}

export async function startSidecar(children: Children, cp: DemoControlPlane, dir: string, spec: InstanceSpec): Promise<DemoSidecar> {
  const certsDir = join(dir, "certs", spec.instance);
  mkdirSync(join(dir, "tokens"), { recursive: true, mode: 0o700 });
  const tokenFile = await cp.joinTokenFile(spec.service, join(dir, "tokens", `${spec.instance}.token`));
  const child = await children.start(`sidecar ${spec.instance}`, [
    ...meshArgv(), "proxy", "--service", spec.service, "--upstream", `http://127.0.0.1:${spec.upstreamPort}`, "--certs-dir", certsDir,
    "--inbound", "127.0.0.1:0", "--outbound", "127.0.0.1:0", "--admin", "127.0.0.1:0",
    "--control-plane", `https://127.0.0.1:${cp.ports.api}`, "--bootstrap-url", `https://127.0.0.1:${cp.ports.bootstrap}`,
    "--join-token-file", tokenFile, "--ca", cp.bundle, "--drain-timeout", "2s", "--log-level", "warn",
    // No --calls: `mesh check` compares each proxy with the every-service snapshot, so a
    // proxy following a narrower one would show as behind.
    ...(spec.healthPath ? ["--health-path", spec.healthPath] : []),
  ]);
  const ready = child.ready as { identity: string; inbound: number; outbound: number; admin: number };
  return { ...spec, pid: child.pid, identity: ready.identity, ports: { inbound: ready.inbound, outbound: ready.outbound, admin: ready.admin } };
}

async function endpointCount(adminPort: number, service: string): Promise<number> {
  const res = await fetch(`http://127.0.0.1:${adminPort}/config_dump`).catch(() => undefined);
  if (!res?.ok) return 0;
  const dump = (await res.json()) as { destinations?: { name: string; endpoints: unknown[] }[] };
  return dump.destinations?.find((d) => d.name === service)?.endpoints.length ?? 0;
}

/** Waits until every caller's sidecar sees every instance of the services it calls. */
export async function waitForDiscovery(sidecars: DemoSidecar[], timeoutMs = 20_000): Promise<void> {
  const instances = (service: string) => sidecars.filter((s) => s.service === service).length;
  const wanted = sidecars.flatMap((s) => (s.calls ?? []).map((callee) => ({ caller: s, callee, count: instances(callee) })));
  const until = Date.now() + timeoutMs;
  for (const w of wanted) {
    while ((await endpointCount(w.caller.ports.admin, w.callee)) < w.count) {
      if (Date.now() > until) throw new MeshError(`discovery: ${w.caller.instance}'s sidecar does not see ${w.count} endpoints of ${w.callee} after ${timeoutMs / 1000}s`);
      await Bun.sleep(100);
    }
  }
}
