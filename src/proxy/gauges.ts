/**
 * Gauges read from the running proxy rather than counted as things happen: open and
 * refused connections per listener, connections per upstream pool, ejections, open
 * circuits and requests waiting per destination. Refreshed just before each scrape.
 */
import type { Snapshot } from "./destinations.ts";
import type { ProxyMetrics } from "./metrics.ts";
import type { H1Listener } from "./transport/h1-server/listener.ts";
import type { LoopbackTunnels } from "./transport/h1-server/loopback-tunnel.ts";
import { UpstreamPools } from "./transport/upstream-pools.ts";

/** Anything that refuses connections when the listeners' budget is spent. */
export type PlaceTakers = Pick<LoopbackTunnels, "refusedOverLimit">;

export interface GaugeSources {
  inbound: H1Listener;
  outbound: H1Listener;
  /** What else takes places from each side's budget: WebSocket and HTTP/2 tunnels, TCP upstream listeners. */
  inboundTunnels: PlaceTakers[];
  outboundTunnels: PlaceTakers[];
  status: H1Listener | undefined;
  admin: H1Listener;
  snapshot: () => Snapshot;
}

export function refreshGauges(metrics: ProxyMetrics, from: GaugeSources): void {
  metrics.openConnections.set({ direction: "inbound" }, from.inbound.openConnections);
  // A WebSocket upgrade, HTTP/2 or TCP connection refused for want of places counts with its side's refusals.
  const refusedBy = (tunnels: PlaceTakers[]) => tunnels.reduce((n, t) => n + t.refusedOverLimit, 0);
  metrics.connectionsRefused.set({ direction: "inbound" }, from.inbound.refusedOverLimit + refusedBy(from.inboundTunnels));
  metrics.connectionsRefused.set({ direction: "outbound" }, from.outbound.refusedOverLimit + refusedBy(from.outboundTunnels));
  if (from.status) metrics.connectionsRefused.set({ direction: "status" }, from.status.refusedOverLimit);
  metrics.connectionsRefused.set({ direction: "admin" }, from.admin.refusedOverLimit);
  let created = UpstreamPools.retiredConnections;
  let open = 0;
  for (const d of new Set(from.snapshot().destinations.values())) {
    const pools = d.pools.totals();
    created += pools.created;
    open += pools.open;
    metrics.ejections.set({ peer: d.name }, d.outlier.totalEjections);
    metrics.pendingRequests.set({ peer: d.name }, pools.waiting);
    const pendingFull = pools.waiting >= d.policy.circuitBreaker.maxPendingRequests;
    metrics.openCircuits.set({ peer: d.name }, d.breaker.isOpen() || pendingFull ? 1 : 0);
  }
  metrics.connections.set({ direction: "outbound" }, created);
  metrics.openConnections.set({ direction: "outbound" }, open);
}
