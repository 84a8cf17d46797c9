/**
 * Outbound over a loopback Bun.serve: the connections the outbound listener tunnels
 * here (WebSocket upgrades, and whatever follows on such a connection). Resolve the
 * service, pick an endpoint, send over the destination's mTLS pool. Plain requests take
 * the raw path of outbound-handler.ts instead.
 */
import type { Server } from "bun";
import type { PickContext } from "./endpoint.ts";
import { CLIENT_CLOSED_STATUS, errorResponse, internalErrorResponse } from "./errors.ts";
import { refusalResponse, requestProblem } from "./request-guard.ts";
import { callDestination } from "./outbound-call.ts";
import { relayResponse } from "./relay-response.ts";
import { prepareRequest, type PreparedRequest } from "./transport/h1/request-head.ts";
import { StreamedResponse } from "./transport/h1/response-sink.ts";
import { forwardableHeaders } from "./headers.ts";
import { RequestRecorder, UNKNOWN_DESTINATION } from "./metrics.ts";
import { resolveHost, type Snapshot } from "./destinations.ts";
import type { WorkloadCerts } from "./certs.ts";
import { outboundWebSockets } from "./websocket/outbound-ws.ts";
import type { Relay } from "./websocket/relay.ts";
import type { WebSocketDeps } from "./websocket/proxy-upgrade.ts";
import { isWebSocketUpgrade } from "./websocket/upgrade-request.ts";

export interface OutboundDeps extends WebSocketDeps {
  snapshot: () => Snapshot;
  maxBodyBytes: number;
  /** This workload's certificate: WebSocket upstreams are opened with it (not through the fetch pool). */
  certs: WorkloadCerts;
}

export function startOutbound(deps: OutboundDeps, hostname: string, port: number): Server<Relay> {
  const ws = outboundWebSockets(deps);
  const recorder = new RequestRecorder(deps.metrics, "outbound", true);
  return Bun.serve({
    hostname,
    port,
    maxRequestBodySize: deps.maxBodyBytes,
    // Never Bun's development error page: it shows the handler's source and stack.
    development: false,
    error: () => internalErrorResponse(),
    websocket: ws.handler,
    async fetch(req, server) {
      const started = performance.now();
      const refused = requestProblem(req);
      if (refused) {
        deps.metrics.refused.inc({ direction: "outbound", reason: refused.reason });
        return refusalResponse(refused);
      }
      const url = new URL(req.url);
      const host = req.headers.get("host") ?? url.host;
      const dest = resolveHost(deps.snapshot(), host);
      if (!dest) {
        const answer = errorResponse("no-route", `no service named "${host}" in this proxy's config`);
        if (isWebSocketUpgrade(req)) return ws.noRoute(req, answer);
        recorder.record(UNKNOWN_DESTINATION, answer.status, performance.now() - started);
        return answer;
      }
      if (isWebSocketUpgrade(req)) return ws.upgrade(req, server, dest);
      const pickCtx: PickContext = { header: (n) => req.headers.get(n) };
      let prepared: PreparedRequest;
      try {
        prepared = prepareRequest(req.method, url.pathname + url.search, forwardableHeaders(req.headers), req.body !== null, host);
      } catch (err) {
        deps.metrics.refused.inc({ direction: "outbound", reason: "header-value" });
        const answer = refusalResponse({ reason: "header-value", detail: (err as Error).message });
        recorder.record(dest.name, answer.status, performance.now() - started);
        return answer;
      }
      deps.tracker.start();
      let status = 502;
      try {
        return await new Promise<Response>((resolve) => {
          const call = callDestination(dest, prepared, req.body, pickCtx, deps.metrics, {
            respond: (upstreamStatus) => {
              status = upstreamStatus;
              const res = new StreamedResponse();
              res.promise.then((r) => resolve(relayResponse(r)), () => resolve(errorResponse("upstream-reset", `${dest.name}: the response could not be read`)));
              return res;
            },
            failed: (error) => {
              status = error.status;
              resolve(new Response(error.body, { status, headers: error.headers }));
            },
            // The client left before the response head (the cancel below).
            abandoned: () => {
              status = CLIENT_CLOSED_STATUS;
              resolve(new Response(null, { status }));
            },
          });
          // Bun.serve aborts the request's signal when its client goes away: stop the call, as the raw path does.
          if (call !== undefined) req.signal.addEventListener("abort", () => call.cancel(), { once: true });
        });
      } finally {
        recorder.record(dest.name, status, performance.now() - started);
        deps.tracker.end();
      }
    },
  });
}
