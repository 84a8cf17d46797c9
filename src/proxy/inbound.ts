/**
 * Inbound over a loopback Bun.serve: the connections the mTLS listener tunnels here
 * (WebSocket upgrades, and whatever follows on such a connection). The caller's SPIFFE
 * ID comes from the tunnel's source port and is handed to the service in
 * `x-mesh-client-id`, after any copy the caller sent was removed. Plain requests take
 * the raw path of inbound-handler.ts instead, but any that follow a refused upgrade on its
 * connection arrive here, so every request passes the same admission (inbound-admission.ts).
 *
 * Bun.serve 1.4.5 leaves HTTP/1.1 requests pipelined in one write unanswered when the
 * answer before them is asynchronous (measured with a bare Bun.serve whose handler awaits
 * a 20 ms timer: neither of two pipelined requests was answered). Here only requests that
 * follow a refused upgrade can meet that, and they fail closed: nothing reaches the service.
 */
import type { Server } from "bun";
import { errorResponse, internalErrorResponse, responseOf, type ErrorParts } from "./errors.ts";
import { admitInbound, authenticateInbound, fieldsSeen, isRefusal, type InboundPolicies } from "./inbound-admission.ts";
import { CLIENT_ID_HEADER, deleteNamed, forwardableHeaders } from "./headers.ts";
import { RequestRecorder } from "./metrics.ts";
import { relayResponse } from "./relay-response.ts";
import { proxyFailureOf, type Http1Pool } from "./transport/h1/index.ts";
import { peerService } from "./peer-service.ts";
import { refusalResponse, requestProblem } from "./request-guard.ts";
import { inboundWebSockets } from "./websocket/inbound-ws.ts";
import type { Relay } from "./websocket/relay.ts";
import type { WebSocketDeps } from "./websocket/proxy-upgrade.ts";
import { isWebSocketUpgrade } from "./websocket/upgrade-request.ts";
import type { UpstreamHealth } from "./upstream-health.ts";

export interface InboundDeps extends WebSocketDeps {
  upstream: URL;
  /** Loopback source port → caller SPIFFE ID, kept by the tunnels from the mTLS listener. */
  identities: ReadonlyMap<number, string>;
  maxBodyBytes: number;
  /** Told of every request's outcome: the passive health the control plane is given. */
  health?: UpstreamHealth;
  /** Connections to the local service, shared with the raw path. */
  pool: Http1Pool;
  /** The service's own policies of the config in force. */
  policies: () => InboundPolicies;
}

export function startInboundHttp(deps: InboundDeps): Server<Relay> {
  const pool = deps.pool;
  const base = deps.upstream.origin;
  const ws = inboundWebSockets(deps);
  const recorder = new RequestRecorder(deps.metrics, "inbound", false);
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
      const caller = deps.identities.get(server.requestIP(req)?.port ?? -1);
      if (!caller) return errorResponse("peer-identity", "request did not arrive through the mTLS listener");
      const refused = requestProblem(req);
      if (refused) {
        deps.metrics.refused.inc({ direction: "inbound", reason: refused.reason });
        return refusalResponse(refused);
      }
      const url = new URL(req.url);
      const headers = forwardableHeaders(req.headers);
      const policies = deps.policies();
      const fields: string[] = [];
      if (policies.authorizer || policies.dryRun || policies.authenticator) headers.forEach((value, name) => fields.push(name, value));
      const peer = peerService(caller);
      // A refusal counts as a request, or as an upgrade, refused.
      const refuse = (e: ErrorParts): Response => {
        if (isWebSocketUpgrade(req)) return ws.refused(req, caller, e);
        recorder.record(peer, e.status, performance.now() - started);
        return responseOf(e);
      };
      const authn = await authenticateInbound(deps.metrics, policies, caller, fields, []);
      if (isRefusal(authn)) return refuse(authn);
      if (authn.strip) deleteNamed(headers, authn.strip.names);
      const target = admitInbound(deps.metrics, policies, caller, req.method, url.pathname + url.search, fieldsSeen(fields, authn), [], authn.user);
      if (typeof target !== "string") return refuse(target);
      if (isWebSocketUpgrade(req)) return ws.upgrade(req, server, caller, target, authn);
      deps.tracker.start();
      let status = 502;
      try {
        headers.set(CLIENT_ID_HEADER, caller);
        for (const [name, value] of authn.claimHeaders) headers.set(name, value);
        const res = await pool.send({ method: req.method, pathAndQuery: target, headers, body: req.body, signal: req.signal });
        status = res.status;
        deps.health?.onResult(status < 500);
        return relayResponse(res);
      } catch (err) {
        deps.health?.onResult(false);
        const res = errorResponse(proxyFailureOf(err), `local service ${base}: ${(err as Error).message}`);
        status = res.status;
        return res;
      } finally {
        recorder.record(peer, status, performance.now() - started);
        deps.tracker.end();
      }
    },
  });
}
