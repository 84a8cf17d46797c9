/**
 * Inbound: requests from other proxies, over strict mTLS, to the local service. The
 * caller's SPIFFE ID comes from the TLS bridge and is handed to the service in
 * `x-mesh-client-id`, after any copy the caller sent was removed.
 */
import type { Server } from "bun";
import { errorResponse, classifyFetchError, internalErrorResponse } from "./errors.ts";
import { CLIENT_ID_HEADER, forwardableHeaders } from "./headers.ts";
import { statusClass, type ProxyMetrics } from "./metrics.ts";
import { relayResponse, sender } from "./transport/http-client.ts";
import type { TlsBridge } from "./transport/tls-bridge.ts";
import type { InflightTracker } from "./inflight.ts";
import { workloadOf, parseSpiffeId } from "../pki/spiffe.ts";
import { refusalResponse, requestProblem } from "./request-guard.ts";
import { inboundWebSockets } from "./websocket/inbound-ws.ts";
import type { Relay } from "./websocket/relay.ts";
import type { WebSocketSessions } from "./websocket/sessions.ts";
import { isWebSocketUpgrade } from "./websocket/upgrade-request.ts";
import type { UpstreamHealth } from "./upstream-health.ts";

export interface InboundDeps {
  upstream: URL;
  bridge: TlsBridge;
  metrics: ProxyMetrics;
  maxBodyBytes: number;
  tracker: InflightTracker;
  websockets?: WebSocketSessions;
  /** Told of every request's outcome: the passive health the control plane is given. */
  health?: UpstreamHealth;
}

function peerService(spiffeId: string): string {
  const parsed = parseSpiffeId(spiffeId);
  return (parsed.ok && workloadOf(parsed.id)?.service) || "unknown";
}

export function startInboundHttp(deps: InboundDeps): Server<Relay> {
  // Its own pool, so an upstream response with ambiguous framing can have its connection closed.
  const pool = new Bun.FetchSession();
  const send = sender(pool);
  const base = deps.upstream.origin;
  const ws = inboundWebSockets(deps);
  return Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    maxRequestBodySize: deps.maxBodyBytes,
    // Never Bun's development error page: it shows the handler's source and stack.
    development: false,
    error: () => internalErrorResponse(),
    websocket: ws.handler,
    // Longer than callers' pool idle timeout (default 10 s, up to 18 s with Bun's coarse
    // timer), so a caller never reuses a connection this side has just closed.
    idleTimeout: 30,
    async fetch(req, server) {
      const started = performance.now();
      const caller = deps.bridge.identities.get(server.requestIP(req)?.port ?? -1);
      if (!caller) return errorResponse("peer-identity", "request did not arrive through the mTLS listener");
      const refused = requestProblem(req);
      if (refused) {
        deps.metrics.refused.inc({ direction: "inbound", reason: refused.reason });
        return refusalResponse(refused);
      }
      if (isWebSocketUpgrade(req)) return ws.upgrade(req, server, caller);
      deps.tracker.start();
      const peer = peerService(caller);
      let status = 502;
      try {
        const url = new URL(req.url);
        const headers = forwardableHeaders(req.headers);
        headers.set(CLIENT_ID_HEADER, caller);
        const res = await send({ method: req.method, url: base + url.pathname + url.search, headers, body: req.body });
        status = res.status;
        deps.health?.onResult(status < 500);
        return relayResponse(res, pool);
      } catch (err) {
        deps.health?.onResult(false);
        const failure = classifyFetchError(err);
        const res = errorResponse(failure === "peer-identity" ? "connect-failure" : failure, `local service ${base}: ${(err as Error).message}`);
        status = res.status;
        return res;
      } finally {
        deps.metrics.requests.inc({ direction: "inbound", peer, status: statusClass(status) });
        deps.metrics.latency.observe({ direction: "inbound" }, performance.now() - started);
        deps.tracker.end();
      }
    },
  });
}
