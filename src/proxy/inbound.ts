/**
 * Inbound: requests from other proxies, over strict mTLS, to the local service. The
 * caller's SPIFFE ID comes from the TLS bridge and is handed to the service in
 * `x-mesh-client-id`, after any copy the caller sent was removed.
 */
import type { Server } from "bun";
import { errorResponse, internalErrorResponse } from "./errors.ts";
import { CLIENT_ID_HEADER, forwardableHeaders } from "./headers.ts";
import { statusClass, type ProxyMetrics } from "./metrics.ts";
import { relayResponse } from "./relay-response.ts";
import { Http1Pool, proxyFailureOf } from "./transport/h1/index.ts";
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

/** Metric label per caller identity; a proxy sees few identities, so each is parsed once, not per request. */
const peerServices = new Map<string, string>();
const MAX_PEERS = 1024;

function peerService(spiffeId: string): string {
  let service = peerServices.get(spiffeId);
  if (service === undefined) {
    const parsed = parseSpiffeId(spiffeId);
    service = (parsed.ok && workloadOf(parsed.id)?.service) || "unknown";
    if (peerServices.size >= MAX_PEERS) peerServices.clear();
    peerServices.set(spiffeId, service);
  }
  return service;
}

/** The local service is on this host: a connect that takes this long is not coming. */
const LOCAL_CONNECT_TIMEOUT_MS = 2_000;
/** Below Bun.serve's default 10 s and most servers' keep-alive timeouts. */
const LOCAL_IDLE_TIMEOUT_MS = 4_000;

export function startInboundHttp(deps: InboundDeps): Server<Relay> {
  // The same strict HTTP/1.1 client as the outbound side: a response with ambiguous
  // framing or stray bytes is refused and its connection never reused.
  const pool = new Http1Pool({
    host: deps.upstream.hostname.replace(/^\[|\]$/g, ""),
    port: Number(deps.upstream.port || 80),
    connectTimeoutMs: LOCAL_CONNECT_TIMEOUT_MS,
    idleTimeoutMs: LOCAL_IDLE_TIMEOUT_MS,
  });
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
        const res = await pool.send({ method: req.method, pathAndQuery: url.pathname + url.search, headers, body: req.body, signal: req.signal });
        status = res.status;
        deps.health?.onResult(status < 500);
        return relayResponse(res);
      } catch (err) {
        deps.health?.onResult(false);
        const res = errorResponse(proxyFailureOf(err), `local service ${base}: ${(err as Error).message}`);
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
