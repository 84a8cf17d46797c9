/**
 * Outbound: the local service's calls to other services, as an HTTP proxy
 * (`HTTP_PROXY=http://127.0.0.1:15001`, absolute-form targets) or by Host header.
 * Resolve the service, pick an endpoint, send over the destination's mTLS pool.
 */
import type { Server } from "bun";
import type { PickContext } from "./endpoint.ts";
import { errorResponse } from "./errors.ts";
import { callDestination } from "./outbound-call.ts";
import { forwardableHeaders } from "./headers.ts";
import type { InflightTracker } from "./inflight.ts";
import { statusClass, type ProxyMetrics } from "./metrics.ts";
import { resolveHost, type Snapshot } from "./destinations.ts";

export interface OutboundDeps {
  snapshot: () => Snapshot;
  metrics: ProxyMetrics;
  tracker: InflightTracker;
  maxBodyBytes: number;
}

export function startOutbound(deps: OutboundDeps, hostname: string, port: number): Server<undefined> {
  return Bun.serve({
    hostname,
    port,
    maxRequestBodySize: deps.maxBodyBytes,
    async fetch(req) {
      const started = performance.now();
      const url = new URL(req.url);
      const host = req.headers.get("host") ?? url.host;
      const dest = resolveHost(deps.snapshot(), host);
      if (!dest) return errorResponse("no-route", `no service named "${host}" in this proxy's config`);
      const pickCtx: PickContext = { header: (n) => req.headers.get(n) };
      deps.tracker.start();
      let status = 502;
      try {
        const res = await callDestination(
          dest,
          { method: req.method, pathAndQuery: url.pathname + url.search, headers: forwardableHeaders(req.headers), body: req.body },
          pickCtx,
          deps.metrics,
        );
        status = res.status;
        return res;
      } finally {
        deps.metrics.requests.inc({ direction: "outbound", peer: dest.name, status: statusClass(status) });
        deps.metrics.latency.observe({ direction: "outbound", peer: dest.name }, performance.now() - started);
        deps.tracker.end();
      }
    },
  });
}
