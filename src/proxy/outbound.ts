/**
 * Outbound WebSocket upgrades over a loopback Bun.serve: the outbound listener tunnels
 * here each connection whose request asks for one, over a private Unix socket. Resolve the service, pick an
 * endpoint, open the upgrade to it (websocket/outbound-ws.ts). An upgrade refused here
 * closes its connection, so plain requests always take the raw path of
 * outbound-handler.ts, never a tunnel (see inbound.ts).
 */
import type { Server } from "bun";
import { errorResponse, internalErrorResponse } from "./errors.ts";
import { refusalResponse, requestProblem } from "./request-guard.ts";
import { resolveHost, type Snapshot } from "./destinations.ts";
import { routedDestination } from "./routing.ts";
import type { WorkloadCerts } from "./certs.ts";
import { closing, UPGRADE_IDLE_TIMEOUT } from "./loopback-answers.ts";
import { outboundWebSockets } from "./websocket/outbound-ws.ts";
import type { Relay } from "./websocket/relay.ts";
import type { WebSocketDeps } from "./websocket/proxy-upgrade.ts";
import { isWebSocketUpgrade } from "./websocket/upgrade-request.ts";

export interface OutboundDeps extends WebSocketDeps {
  snapshot: () => Snapshot;
  maxBodyBytes: number;
  /** This workload's certificate: WebSocket upstreams are opened with it. */
  certs: WorkloadCerts;
}

/** `path`: the Unix socket it listens on, in a directory only this user can enter. */
export function startOutbound(deps: OutboundDeps, path: string): Server<Relay> {
  const ws = outboundWebSockets(deps);
  return Bun.serve({
    unix: path,
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
    if (!isWebSocketUpgrade(req)) return errorResponse("bad-request", "only WebSocket upgrades are tunnelled here");
    const refused = requestProblem(req);
    if (refused) {
      deps.metrics.refused.inc({ direction: "outbound", reason: refused.reason });
      return refusalResponse(refused);
    }
    const url = new URL(req.url);
    const host = req.headers.get("host") ?? url.host;
    const snapshot = deps.snapshot();
    const named = resolveHost(snapshot, host);
    if (!named) return ws.noRoute(req, errorResponse("no-route", `no service named "${host}" in this proxy's config`));
    const route = snapshot.routes.get(named);
    const choice = route === undefined ? route : routedDestination(route, { method: req.method, pathAndQuery: url.pathname + url.search, header: (n) => req.headers.get(n) ?? undefined });
    return ws.upgrade(req, server, choice?.dest ?? named, choice);
  }
}
