/**
 * Inbound WebSocket upgrades over a loopback Bun.serve: the mTLS listener tunnels here
 * each connection whose request asks for one, over a private Unix socket. The caller's
 * SPIFFE ID comes from the name the tunnel gives the request and is handed to the service in `x-mesh-client-id`, after any
 * copy the caller sent was removed; the upgrade passes the same admission as every
 * inbound request (inbound-admission.ts), now with its end-user token verified.
 *
 * An upgrade refused here, by admission or by the service, closes its connection, as
 * the raw listener's refusals do: plain requests always take the raw path of
 * inbound-handler.ts, with its logs, spans and pooled client, never a tunnel. (Bun.serve
 * 1.4.5 also leaves requests pipelined behind an asynchronous answer unanswered, so a
 * connection kept after a refusal would hang any it carried.)
 */
import type { Server } from "bun";
import { errorResponse, internalErrorResponse, responseOf } from "./errors.ts";
import { admitInbound, authenticateInbound, headersSeen, isRefusal, type InboundPolicies } from "./inbound-admission.ts";
import { forwardableHeaders, TUNNEL_HEADER } from "./headers.ts";
import { closing, UPGRADE_IDLE_TIMEOUT } from "./loopback-answers.ts";
import { refusalResponse, requestProblem } from "./request-guard.ts";
import { inboundWebSockets } from "./websocket/inbound-ws.ts";
import type { Relay } from "./websocket/relay.ts";
import type { WebSocketDeps } from "./websocket/proxy-upgrade.ts";
import { isWebSocketUpgrade } from "./websocket/upgrade-request.ts";

export interface InboundDeps extends WebSocketDeps {
  upstream: URL;
  /** A tunnel's name (x-mesh-tunnel) → the caller's SPIFFE ID, kept by the tunnels from the mTLS listener. */
  identities: ReadonlyMap<string, string>;
  /** The Unix socket the server listens on, in a directory only this user can enter. */
  path: string;
  maxBodyBytes: number;
  /** The service's own policies of the config in force. */
  policies: () => InboundPolicies;
}

export function startInboundHttp(deps: InboundDeps): Server<Relay> {
  const ws = inboundWebSockets(deps);
  return Bun.serve({
    unix: deps.path,
    maxRequestBodySize: deps.maxBodyBytes,
    // Never Bun's development error page: it shows the handler's source and stack.
    development: false,
    error: () => closing(internalErrorResponse()),
    websocket: ws.handler,
    ...UPGRADE_IDLE_TIMEOUT,
    // Any answer but 101 (undefined: upgraded) closes the tunnel.
    fetch: async (req, server) => {
      const answer = await upgrade(req, server);
      return answer && closing(answer);
    },
  });

  async function upgrade(req: Request, server: Server<Relay>): Promise<Response | undefined> {
    const caller = deps.identities.get(req.headers.get(TUNNEL_HEADER) ?? "");
    if (!caller) return errorResponse("peer-identity", "request did not arrive through the mTLS listener");
    if (!isWebSocketUpgrade(req)) return errorResponse("bad-request", "only WebSocket upgrades are tunnelled here");
    const refused = requestProblem(req);
    if (refused) {
      deps.metrics.refused.inc({ direction: "inbound", reason: refused.reason });
      return ws.refused(req, caller, refusalResponse(refused));
    }
    const url = new URL(req.url);
    const policies = deps.policies();
    const fields: string[] = [];
    if (policies.authorizer || policies.dryRun || policies.authenticator) forwardableHeaders(req.headers).forEach((value, name) => fields.push(name, value));
    const authn = await authenticateInbound(deps.metrics, policies, caller, fields, []);
    if (isRefusal(authn)) return ws.refused(req, caller, responseOf(authn));
    const seen = headersSeen(fields, [], authn);
    const target = admitInbound(deps.metrics, policies, caller, req.method, url.pathname + url.search, seen?.fields ?? fields, [], authn.user);
    if (typeof target !== "string") return ws.refused(req, caller, responseOf(target));
    return ws.upgrade(req, server, caller, target, authn);
  }
}
