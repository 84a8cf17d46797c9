/**
 * The mesh pair for opaque TCP: client → orders' sidecar's local TCP upstream listener
 * (`--tcp-upstream payments:7000=127.0.0.1:0`) → mTLS, ALPN mesh-tcp/1 → payments'
 * sidecar's inbound → the echo service, the Service port's targetPort on the host of
 * payments' --upstream. Both sidecars start as the HTTP/1.1 bench starts them
 * (bench/mesh.ts); each config holds the payments Service with its tcp port, and the
 * caller's names payments' inbound as its endpoint.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { SERVICE_HOST } from "../check.ts";
import { startProxy } from "../mesh.ts";
import type { BuildContext, ProxyCounts, TcpSetup } from "./topology.ts";

/** The Service port the caller addresses; the callee carries it to the echo service's port. */
export const TCP_SERVICE_PORT = 7000;
/** How long the sidecars may take to close what the client closed before they are counted. */
const SETTLE_MS = 3000;
/** The callee's --upstream port: the discard port, which nothing here calls. */
const UNCALLED_HTTP_PORT = 9;

/** The payments Service: an http port (the sidecar's own) and the tcp port, with `endpoint` for the caller's config. */
function serviceManifest(targetPort: number, endpoint?: number): string {
  return [
    "apiVersion: mesh.dev/v1alpha1",
    "kind: Service",
    `metadata: { name: ${SERVICE_HOST} }`,
    "spec:",
    "  ports:",
    "    - { name: http, port: 80 }",
    `    - { name: echo, port: ${TCP_SERVICE_PORT}, protocol: tcp, targetPort: ${targetPort} }`,
    ...(endpoint === undefined ? [] : [`  endpoints: [{ address: 127.0.0.1, port: ${endpoint} }]`]),
    "",
  ].join("\n");
}

interface TcpMetrics {
  open: number;
  ok: number;
  failed: number;
}

/** A sidecar's carried TCP connections, from its admin /metrics: open now, ended in order, ended otherwise. */
async function tcpMetrics(adminPort: number): Promise<TcpMetrics> {
  const text = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`, { signal: AbortSignal.timeout(3000) })).text();
  const m: TcpMetrics = { open: 0, ok: 0, failed: 0 };
  for (const line of text.split("\n")) {
    const value = Number(line.split(" ").pop());
    if (line.startsWith("mesh_tcp_connections_open{")) m.open += value;
    else if (line.startsWith("mesh_tcp_connections_total{")) {
      if (line.includes('result="ok"')) m.ok += value;
      else m.failed += value;
    }
  }
  return m;
}

/** Both sidecars' counts once neither holds an open connection (a connection is counted when it ends), or after SETTLE_MS. */
async function settledCounts(admins: number[]): Promise<ProxyCounts> {
  const deadline = Date.now() + SETTLE_MS;
  for (;;) {
    const each = await Promise.all(admins.map(tcpMetrics));
    if (each.every((m) => m.open === 0) || Date.now() >= deadline)
      return { failed: each.reduce((n, m) => n + m.failed + m.open, 0), ok: Math.min(...each.map((m) => m.ok)) };
    await Bun.sleep(50);
  }
}

export async function meshPair(ctx: BuildContext): Promise<TcpSetup> {
  try {
    const calleeConfig = join(ctx.tmp, "mesh-tcp-payments.yaml");
    writeFileSync(calleeConfig, serviceManifest(ctx.echo.port));
    // Its --upstream's host is where carried connections go; its HTTP port is never called, and
    // must not be the echo's: the inbound carries no raw TCP to the HTTP port.
    const callee = await startProxy(ctx.mesh, "mesh-pair/payments", "payments", ctx.certs.payments, UNCALLED_HTTP_PORT, calleeConfig);
    const callerConfig = join(ctx.tmp, "mesh-tcp-orders.yaml");
    writeFileSync(callerConfig, serviceManifest(ctx.echo.port, callee.inbound));
    const caller = await startProxy(ctx.mesh, "mesh-pair/orders", "orders", ctx.certs.orders, ctx.echo.port, callerConfig, [
      "--tcp-upstream", `${SERVICE_HOST}:${TCP_SERVICE_PORT}=127.0.0.1:0`,
    ]);
    const port = caller.tcp[0];
    if (port === undefined) throw new Error("the caller's sidecar reported no tcp upstream listener in its ready line");
    return {
      ok: true,
      topology: {
        id: "mesh-pair",
        port,
        echo: ctx.echo,
        proxies: [
          { label: "caller", pids: [caller.pid] },
          { label: "callee", pids: [callee.pid] },
        ],
        proxyCounts: () => settledCounts([caller.admin, callee.admin]),
      },
    };
  } catch (err) {
    return { ok: false, id: "mesh-pair", status: "failed", reason: (err as Error).message };
  }
}
