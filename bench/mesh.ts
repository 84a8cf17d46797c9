/**
 * The mesh topologies. One proxy: client → orders' outbound → the service as a plain-HTTP
 * destination (Service spec.mtls: false). Pair: client → orders' outbound → mTLS →
 * payments' inbound → service. Each topology has its own processes, so the CPU and
 * memory measured belong to that topology alone.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import type { MeshCommand } from "./mesh-command.ts";
import { spawn, tail, waitForLine } from "./procs.ts";
import type { BuildContext, Setup, Topology } from "./topology.ts";
import { SERVICE_HOST } from "./check.ts";

export interface Started {
  pid: number;
  inbound: number;
  outbound: number;
  admin: number;
  /** The local TCP upstream listeners' ports, in the order of their --tcp-upstream flags (bench/tcp/). */
  tcp: number[];
}

/** The payments Service, at 127.0.0.1:`port`; `mtls: false` makes it a plain-HTTP destination. */
export function serviceManifest(port: number, mtls: boolean): string {
  return [
    "apiVersion: mesh.dev/v1alpha1",
    "kind: Service",
    `metadata: { name: ${SERVICE_HOST} }`,
    "spec:",
    "  ports: [{ name: http, port: 80 }]",
    `  endpoints: [{ address: 127.0.0.1, port: ${port} }]`,
    ...(mtls ? [] : ["  mtls: false"]),
    "",
  ].join("\n");
}

/** Starts one sidecar on free loopback ports and waits for its ready line (also used by bench/grpc/ and bench/tcp/); `extra`: more flags. */
export async function startProxy(mesh: MeshCommand, label: string, service: string, certsDir: string, upstreamPort: number, config?: string, extra: string[] = []): Promise<Started> {
  const child = spawn(label, [
    ...mesh.argv, "proxy", "--service", service, "--upstream", `http://127.0.0.1:${upstreamPort}`, "--certs-dir", certsDir,
    "--inbound", "127.0.0.1:0", "--outbound", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--drain-timeout", "2s",
    ...(config ? ["--config", config] : []),
    ...extra,
  ]);
  const line = await waitForLine(child, (l) => l.includes('"ready":true'), 20_000);
  const ready = JSON.parse(line) as Omit<Started, "pid" | "tcp"> & { tcp?: number[] };
  return { pid: child.pid, inbound: ready.inbound, outbound: ready.outbound, admin: ready.admin, tcp: ready.tcp ?? [] };
}

/** Sum of `mesh_connections_total{direction="inbound"}` on a proxy's admin /metrics. */
export async function inboundConnections(adminPort: number): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`, { signal: AbortSignal.timeout(3000) })).text();
  let total = 0;
  for (const line of text.split("\n"))
    if (line.startsWith("mesh_connections_total{") && line.includes('direction="inbound"')) total += Number(line.split(" ").pop());
  return total;
}

export async function meshOne(mesh: MeshCommand, ctx: BuildContext): Promise<Setup> {
  const config = join(ctx.tmp, "mesh-one.yaml");
  writeFileSync(config, serviceManifest(ctx.servicePort, false));
  try {
    const p = await startProxy(mesh, "mesh-one/orders", "orders", ctx.certs.orders, ctx.servicePort, config);
    const topology: Topology = { id: "mesh-one", family: "mesh", shape: "one", url: `http://127.0.0.1:${p.outbound}/`, proxies: [{ label: "outbound", pids: [p.pid] }] };
    return { ok: true, topology };
  } catch (err) {
    const message = (err as Error).message;
    // The field is new; a mesh built before it refuses the manifest. That is "not yet", not broken.
    if (/mtls/.test(message) && /unknown|unrecognized|invalid config/i.test(message))
      return { ok: false, id: "mesh-one", family: "mesh", shape: "one", status: "skipped", reason: `this mesh does not accept Service spec.mtls: false yet: ${tail(message, 3)}` };
    return { ok: false, id: "mesh-one", family: "mesh", shape: "one", status: "failed", reason: message };
  }
}

export async function meshPair(mesh: MeshCommand, ctx: BuildContext): Promise<Setup> {
  try {
    const inbound = await startProxy(mesh, "mesh-pair/payments", "payments", ctx.certs.payments, ctx.servicePort);
    const config = join(ctx.tmp, "mesh-pair.yaml");
    writeFileSync(config, serviceManifest(inbound.inbound, true));
    const outbound = await startProxy(mesh, "mesh-pair/orders", "orders", ctx.certs.orders, ctx.servicePort, config);
    const topology: Topology = {
      id: "mesh-pair",
      family: "mesh",
      shape: "pair",
      url: `http://127.0.0.1:${outbound.outbound}/`,
      proxies: [
        { label: "outbound", pids: [outbound.pid] },
        { label: "inbound", pids: [inbound.pid] },
      ],
      inboundConnections: () => inboundConnections(inbound.admin),
      connectionsPerReading: 0, // admin is its own listener; scrapes are not counted as inbound
    };
    return { ok: true, topology };
  } catch (err) {
    return { ok: false, id: "mesh-pair", family: "mesh", shape: "pair", status: "failed", reason: (err as Error).message };
  }
}
