/**
 * The mesh pair for gRPC: h2load → orders' outbound (h2c, `:authority payments`) → one
 * mTLS HTTP/2 session (ALPN h2) → payments' inbound → h2c → the service. The sidecars are
 * started as the HTTP/1.1 bench starts them (bench/mesh.ts), with a static config whose
 * Service `payments` has the payments sidecar's inbound as its endpoint.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { serviceManifest, startProxy } from "../mesh.ts";
import type { BuildContext, GrpcSetup } from "./topology.ts";

/** The statuses a client leaving produces (CANCELLED) and success: anything else the proxy answered with an error. */
const NOT_ERRORS = new Set(["0", "1"]);

/** gRPC calls a sidecar ended with an error status, from its admin /metrics (mesh_grpc_responses_total). */
export async function grpcErrors(adminPort: number): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`, { signal: AbortSignal.timeout(3000) })).text();
  let total = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith("mesh_grpc_responses_total{")) continue;
    const status = /grpc_status="([^"]*)"/.exec(line)?.[1];
    if (status !== undefined && !NOT_ERRORS.has(status)) total += Number(line.split(" ").pop());
  }
  return total;
}

export async function meshPair(ctx: BuildContext): Promise<GrpcSetup> {
  try {
    const inbound = await startProxy(ctx.mesh, "mesh-pair/payments", "payments", ctx.certs.payments, ctx.service.port);
    const config = join(ctx.tmp, "mesh-grpc-pair.yaml");
    writeFileSync(config, serviceManifest(inbound.inbound, true));
    // Its --upstream is never called here: orders only calls out.
    const outbound = await startProxy(ctx.mesh, "mesh-pair/orders", "orders", ctx.certs.orders, ctx.service.port, config);
    return {
      ok: true,
      topology: {
        id: "mesh-pair",
        port: outbound.outbound,
        service: ctx.service,
        proxies: [
          { label: "outbound", pids: [outbound.pid] },
          { label: "inbound", pids: [inbound.pid] },
        ],
        proxyErrors: async () => (await grpcErrors(outbound.admin)) + (await grpcErrors(inbound.admin)),
      },
    };
  } catch (err) {
    return { ok: false, id: "mesh-pair", status: "failed", reason: (err as Error).message };
  }
}
