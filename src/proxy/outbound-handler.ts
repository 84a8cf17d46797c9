/**
 * Outbound requests on the raw listener: the local service's calls to other services,
 * as an HTTP proxy (`HTTP_PROXY=http://127.0.0.1:15001`, absolute-form targets) or by
 * Host. Resolve the service, pick an endpoint, send over the destination's mTLS pool
 * (outbound-call.ts: retries, breaker, deadline), and relay the response without
 * building Request or Response objects. WebSocket upgrades are tunnelled to the
 * loopback server of outbound.ts, which carries them.
 */
import { resolveHost, type Snapshot } from "./destinations.ts";
import type { PickContext } from "./endpoint.ts";
import { errorParts, type ErrorParts } from "./errors.ts";
import { RELAY_SKIP } from "./headers.ts";
import type { InflightTracker } from "./inflight.ts";
import { RequestRecorder, type ProxyMetrics } from "./metrics.ts";
import { callDestination } from "./outbound-call.ts";
import { RelaySink } from "./relay-sink.ts";
import { fieldValue } from "./transport/h1/request-parse.ts";
import { prepareRelayed, type PreparedRequest } from "./transport/h1/request-head.ts";
import type { ConnectionHandler, ServerRequest } from "./transport/h1-server/connection.ts";
import type { LoopbackTunnels } from "./transport/h1-server/loopback-tunnel.ts";
import { requestFraming } from "./transport/h1-server/request-framing.ts";
import type { Responder } from "./transport/h1-server/responder.ts";

export interface OutboundHandlerDeps {
  snapshot: () => Snapshot;
  metrics: ProxyMetrics;
  tracker: InflightTracker;
  tunnels: LoopbackTunnels;
}

function answer(res: Responder, e: ErrorParts): void {
  res.respond(e.status, e.headers, e.body);
}

export function outboundHandler(deps: OutboundHandlerDeps): ConnectionHandler {
  const { metrics, tracker } = deps;
  const recorder = new RequestRecorder(metrics, "outbound", true);
  return {
    refused: (reason) => metrics.refused.inc({ direction: "outbound", reason }),
    upgrade: (conn, initial) => deps.tunnels.open(conn, initial),
    request(req: ServerRequest, res: Responder) {
      const started = performance.now();
      const head = req.head;
      const dest = resolveHost(deps.snapshot(), head.host);
      if (!dest) return answer(res, errorParts("no-route", `no service named "${head.host}" in this proxy's config`));
      let prepared: PreparedRequest;
      try {
        prepared = prepareRelayed(head.method, head.pathAndQuery, head.host, head.fields, RELAY_SKIP, head.connectionTokens, "", requestFraming(head));
      } catch (err) {
        metrics.refused.inc({ direction: "outbound", reason: "header-value" });
        return answer(res, errorParts("bad-request", (err as Error).message, { connection: "close" }));
      }
      const pick: PickContext = { header: (name) => fieldValue(head.fields, name) ?? null };
      tracker.start();
      // Latency is to the response head, as the metric says; the request counts once it is over.
      let latency = 0;
      const finish = (status: number) => {
        recorder.record(dest.name, status, latency || performance.now() - started);
        tracker.end();
      };
      let status = 0;
      try {
        callDestination(dest, { prepared, body: req.body }, pick, metrics, {
          respond: (upstreamStatus) => {
            status = upstreamStatus;
            latency = performance.now() - started;
            // The head is already in: a failure now is the body's, and resets the client's connection.
            return new RelaySink(res, () => res.abort(), () => finish(status));
          },
          failed: (error) => {
            answer(res, error);
            finish(error.status);
          },
        });
      } catch {
        // A bug must not leave the request counted in flight (a drain would wait for it).
        answer(res, { status: 500, headers: { "content-type": "text/plain; charset=utf-8", "x-mesh-error": "internal", connection: "close" }, body: "mesh: internal error\n" });
        finish(500);
      }
    },
  };
}
