/**
 * Outbound: the local service's calls to other services, as an HTTP proxy
 * (`HTTP_PROXY=http://127.0.0.1:15001`, absolute-form targets) or by Host header.
 * Resolve the service, pick an endpoint, send over the destination's mTLS pool.
 */
import type { Server } from "bun";
import type { PickContext } from "./endpoint.ts";
import { errorResponse, classifyFetchError } from "./errors.ts";
import { forwardableHeaders } from "./headers.ts";
import type { InflightTracker } from "./inflight.ts";
import { statusClass, type ProxyMetrics } from "./metrics.ts";
import { resolveHost, type Snapshot } from "./destinations.ts";
import { relayResponse, sender } from "./transport/http-client.ts";

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
      const endpoint = dest.balancer.pick(dest.endpoints.filter((e) => e.weight > 0), pickCtx);
      if (!endpoint) return errorResponse("no-healthy-endpoints", `service ${dest.name} has no endpoint to send to`);
      deps.tracker.start();
      endpoint.inflight++;
      let status = 502;
      try {
        const headers = forwardableHeaders(req.headers);
        const res = await sender(dest.session)({
          method: req.method,
          url: `https://${endpoint.key}${url.pathname}${url.search}`,
          headers,
          body: req.body,
        });
        status = res.status;
        return relayResponse(res);
      } catch (err) {
        const res = errorResponse(classifyFetchError(err), `${dest.name} endpoint ${endpoint.key}: ${(err as Error).message}`);
        status = res.status;
        return res;
      } finally {
        endpoint.inflight--;
        deps.metrics.requests.inc({ direction: "outbound", peer: dest.name, status: statusClass(status) });
        deps.metrics.latency.observe({ direction: "outbound", peer: dest.name }, performance.now() - started);
        deps.tracker.end();
      }
    },
  });
}
