/** Starts the control plane with S Services, and P simulators with N proxies between them. */
import { join } from "node:path";
import type { MeshCommand } from "../mesh-command.ts";
import type { Options } from "./args.ts";
import { startControlPlane, type ControlPlane } from "./cp-process.ts";
import { serviceManifest, serviceName } from "./manifests.ts";
import type { SimConfig } from "./sim-protocol.ts";
import { startSimulator, type Simulator } from "./sim-handle.ts";

/** Registered endpoints are addresses nobody dials: 127.0.0.1, one port per proxy from here. */
const FIRST_PORT = 20_000;

export interface Setup {
  cp: ControlPlane;
  sims: Simulator[];
}

export async function setUp(opts: Options, mesh: MeshCommand, tmp: string, log: (line: string) => void): Promise<Setup> {
  const cp = await startControlPlane(mesh, tmp, opts.leaseTtl);
  log(`control plane pid ${cp.child.pid}: api ${cp.ports.api}, bootstrap ${cp.ports.bootstrap}, admin ${cp.ports.admin}`);
  await cp.apply(Array.from({ length: opts.services }, (_, i) => serviceManifest(serviceName(i))));

  // Proxy i belongs to svc-(i mod S) and to simulator i mod P.
  const configs: SimConfig[] = Array.from({ length: opts.simulators }, (_, k) => ({
    apiUrl: `https://127.0.0.1:${cp.ports.api}`,
    bootstrapUrl: `https://127.0.0.1:${cp.ports.bootstrap}`,
    bundlePem: cp.bundlePem,
    trustDomain: cp.trustDomain,
    certsDir: join(tmp, `sim-${k}-certs`),
    clientPer: opts.clientPer,
    tokens: {},
    proxies: [],
  }));
  for (let i = 0; i < opts.proxies; i++) {
    const c = configs[i % opts.simulators]!;
    c.proxies.push({ service: serviceName(i % opts.services), address: "127.0.0.1", port: FIRST_PORT + i });
  }
  for (const c of configs) for (const service of new Set(c.proxies.map((p) => p.service))) c.tokens[service] = await cp.joinToken(service);
  const sims = await Promise.all(configs.map((c, k) => startSimulator(k, tmp, c)));
  log(`${sims.length} simulators bootstrapped (pids ${sims.map((s) => s.child.pid).join(", ")}), ${opts.proxies} proxies over ${opts.services} services`);
  return { cp, sims };
}
