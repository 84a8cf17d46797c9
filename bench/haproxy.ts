/**
 * haproxy as the second reference proxy: one thread each, pooled server connections
 * shared between clients (`http-reuse always`), and for the pair mTLS with mesh's
 * certificates (inbound: `verify required` against the bundle; outbound: presents its
 * chain, verifies the server's chain and, by `verifyhost`, its CN; TLS session reuse is
 * haproxy's default). haproxy wants certificate and key in one PEM, so each pair side
 * gets a concatenation of mesh's chain.pem and key.pem.
 */
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { SERVICE_HOST } from "./check.ts";
import { findTool, startForeground } from "./external.ts";
import { freePort } from "../test/helpers/ports.ts";
import type { BuildContext, Setup, Topology } from "./topology.ts";

const GLOBAL = `
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 60s
  http-reuse always
`;

/** mesh's chain.pem and key.pem in one file, as haproxy's `crt` wants them (also used by bench/tcp/). */
export function combinedPem(dir: string, certs: string): string {
  const path = join(dir, "crt.pem");
  writeFileSync(path, readFileSync(join(certs, "chain.pem"), "utf8") + readFileSync(join(certs, "key.pem"), "utf8"));
  chmodSync(path, 0o600);
  return path;
}

/** Writes `text` as DIR/haproxy.cfg, starts haproxy in the foreground and waits for `port`; its pid (also used by bench/tcp/). */
export async function start(label: string, dir: string, text: string, port: number): Promise<number[]> {
  const file = join(dir, "haproxy.cfg");
  writeFileSync(file, text);
  // -db: stay in the foreground, one process (no master-worker), so the pid is the proxy.
  return (await startForeground(label, [findTool("haproxy")!, "-db", "-f", file], port, { workers: 0 })).pids;
}

function scratch(ctx: BuildContext, name: string): string {
  const dir = join(ctx.tmp, name);
  mkdirSync(dir, { recursive: true });
  return dir;
}

function unavailable(shape: "one" | "pair"): Setup | undefined {
  if (findTool("haproxy")) return undefined;
  return { ok: false, id: `haproxy-${shape}`, family: "haproxy", shape, status: "skipped", reason: "haproxy is not installed" };
}

export async function haproxyOne(ctx: BuildContext): Promise<Setup> {
  const missing = unavailable("one");
  if (missing) return missing;
  try {
    const port = freePort();
    const cfg = `${GLOBAL}
frontend one
  bind 127.0.0.1:${port}
  default_backend service
backend service
  server s1 127.0.0.1:${ctx.servicePort}
`;
    const pids = await start("haproxy-one", scratch(ctx, "haproxy-one"), cfg, port);
    const topology: Topology = { id: "haproxy-one", family: "haproxy", shape: "one", url: `http://127.0.0.1:${port}/`, proxies: [{ label: "proxy", pids }] };
    return { ok: true, topology };
  } catch (err) {
    return { ok: false, id: "haproxy-one", family: "haproxy", shape: "one", status: "failed", reason: (err as Error).message };
  }
}

/** `conn_tot` of the inbound frontend, from the stats CSV (served by a separate frontend, so not counted). */
async function frontendConnections(statsPort: number): Promise<number> {
  const csv = await (await fetch(`http://127.0.0.1:${statsPort}/stats;csv`, { signal: AbortSignal.timeout(3000) })).text();
  const [header, ...rows] = csv.split("\n");
  const columns = (header ?? "").replace(/^# /, "").split(",");
  const at = columns.indexOf("conn_tot");
  const row = rows.map((r) => r.split(",")).find((r) => r[0] === "inbound" && r[1] === "FRONTEND");
  if (at < 0 || !row) throw new Error("no conn_tot for the inbound frontend in haproxy stats");
  return Number(row[at]);
}

export async function haproxyPair(ctx: BuildContext): Promise<Setup> {
  const missing = unavailable("pair");
  if (missing) return missing;
  try {
    const [inPort, statsPort, outPort] = [freePort(), freePort(), freePort()];
    const bundle = join(ctx.certs.payments, "bundle.pem");
    const inDir = scratch(ctx, "haproxy-pair-in");
    const inbound = `${GLOBAL}
frontend inbound
  bind 127.0.0.1:${inPort} ssl crt ${combinedPem(inDir, ctx.certs.payments)} ca-file ${bundle} verify required
  http-request set-header x-mesh-client-id %[ssl_c_s_dn]
  default_backend service
backend service
  server s1 127.0.0.1:${ctx.servicePort}
frontend stats
  bind 127.0.0.1:${statsPort}
  stats enable
  stats uri /stats
`;
    const inPids = await start("haproxy-pair/inbound", inDir, inbound, inPort);
    const outDir = scratch(ctx, "haproxy-pair-out");
    const outbound = `${GLOBAL}
frontend outbound
  bind 127.0.0.1:${outPort}
  default_backend inbound
backend inbound
  server s1 127.0.0.1:${inPort} ssl crt ${combinedPem(outDir, ctx.certs.orders)} ca-file ${join(ctx.certs.orders, "bundle.pem")} verify required verifyhost ${SERVICE_HOST}
`;
    const outPids = await start("haproxy-pair/outbound", outDir, outbound, outPort);
    const topology: Topology = {
      id: "haproxy-pair",
      family: "haproxy",
      shape: "pair",
      url: `http://127.0.0.1:${outPort}/`,
      proxies: [
        { label: "outbound", pids: outPids },
        { label: "inbound", pids: inPids },
      ],
      inboundConnections: () => frontendConnections(statsPort),
      connectionsPerReading: 0,
    };
    return { ok: true, topology };
  } catch (err) {
    return { ok: false, id: "haproxy-pair", family: "haproxy", shape: "pair", status: "failed", reason: (err as Error).message };
  }
}
