/**
 * WebSocket upgrades on the outbound listener: pick an endpoint of the destination as
 * its balancer would, open wss:// to that peer's inbound with this workload's
 * certificate, and accept the peer only if it presents the destination's SPIFFE ID,
 * exactly as the HTTP path does (plain ws:// for a destination outside the mesh).
 *
 * A session holds, for its whole life, one in-flight count on its endpoint (so
 * least-request spreads long-lived sockets too) and one of the destination's
 * "connections" breaker slots (each WebSocket is its own upstream connection; the
 * HTTP path's "requests" slots stay free for requests).
 */
import { changeHeaders } from "../request-header-change.ts";
import type { RouteChoice } from "../routing.ts";
import type { Server } from "bun";
import type { WorkloadCerts } from "../certs.ts";
import { expectPeer, type Destination } from "../destinations.ts";
import { errorResponse } from "../errors.ts";
import { DEFAULT_HANDLER_LIMITS, relayHandler } from "./handler.ts";
import { pickEndpoint } from "../outbound-call.ts";
import { proxyUpgrade, upgradeContext, upgradeRefused, type UpgradeTarget, type WebSocketDeps } from "./proxy-upgrade.ts";
import type { Relay } from "./relay.ts";
import { UNKNOWN_DESTINATION } from "../metrics.ts";
import { handshakeProblem, pathAndQuery, upstreamHeaders } from "./upgrade-request.ts";

export function outboundWebSockets(deps: WebSocketDeps & { certs: WorkloadCerts }) {
  const ctx = upgradeContext("outbound", deps);

  /** mTLS with this workload's certificate; the peer must be `spiffeId`. */
  function peerTls(spiffeId: string, target: Partial<UpgradeTarget>): UpgradeTarget["tls"] {
    const check = expectPeer(spiffeId, deps.certs.trustDomain);
    let identityError: Error | undefined;
    target.identityError = () => identityError;
    return {
      cert: deps.certs.chainPem,
      key: deps.certs.keyPem,
      ca: deps.certs.bundlePem,
      rejectUnauthorized: true,
      // Bun reports a refusal from here only as a hostname mismatch; keep our reason.
      checkServerIdentity: ((host: string, cert: { raw?: Uint8Array }) => (identityError = check(host, cert))) as never,
    };
  }

  return {
    sessions: ctx.sessions,
    handler: relayHandler(DEFAULT_HANDLER_LIMITS),
    /** An upgrade for a name no Service has: counted under "unknown", logged with no peer, traced. */
    noRoute: (req: Request, answer: Response): Response => upgradeRefused(ctx, req, answer, UNKNOWN_DESTINATION, ""),
    /** `route`: what the route rule that chose `dest` changes (headers, timeout). */
    async upgrade(req: Request, server: Server<Relay>, dest: Destination, route?: Pick<RouteChoice, "requestHeaders" | "call">): Promise<Response | undefined> {
      const problem = handshakeProblem(req);
      if (problem) return upgradeRefused(ctx, req, errorResponse("bad-request", problem), dest.name);
      const admitted = dest.breaker.tryAcquire("connections");
      if (admitted !== true) return upgradeRefused(ctx, req, errorResponse("overflow", `${dest.name}: ${admitted.replace(/-/g, " ")} reached`, { "x-mesh-overflow": admitted }), dest.name);
      const endpoint = pickEndpoint(dest, { header: (n) => req.headers.get(n) }, undefined);
      if (!endpoint) {
        dest.breaker.release("connections");
        return upgradeRefused(ctx, req, errorResponse("no-healthy-endpoints", `service ${dest.name} has no endpoint to send to`), dest.name);
      }
      endpoint.inflight++;
      const headers = upstreamHeaders(req);
      if (route?.requestHeaders !== undefined) changeHeaders(headers, route.requestHeaders);
      const target: UpgradeTarget = {
        url: `${dest.scheme === "https" ? "wss" : "ws"}://${endpoint.key}${pathAndQuery(req)}`,
        headers,
        peer: dest.name,
        // The 101 is the response's headers: the same deadline as an HTTP request's.
        timeoutMs: (route === undefined ? dest.call : route.call).timeoutMs,
        onEnd: () => {
          endpoint.inflight--;
          dest.breaker.release("connections");
        },
      };
      if (dest.spiffeId) target.tls = peerTls(dest.spiffeId, target);
      const res = await proxyUpgrade(req, server, target, ctx);
      // As for HTTP: 5xx and failures to connect count against the endpoint, 4xx do not.
      dest.outlier.onResult(endpoint, res === undefined || res.status < 500);
      return res;
    },
  };
}
