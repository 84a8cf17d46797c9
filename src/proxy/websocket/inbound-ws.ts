/**
 * WebSocket upgrades on the inbound side (behind the TLS bridge): the caller's
 * SPIFFE ID, proven by mTLS, goes to the local service in x-mesh-client-id on the
 * upgrade request, after any copy the caller sent was removed.
 */
import type { Server } from "bun";
import { peerService } from "../peer-service.ts";
import { errorResponse } from "../errors.ts";
import { CLIENT_ID_HEADER, deleteNamed, TUNNEL_HEADER } from "../headers.ts";
import { ANONYMOUS, type Authenticated } from "../authentication/authenticator.ts";
import { DEFAULT_HANDLER_LIMITS, relayHandler } from "./handler.ts";
import { proxyUpgrade, upgradeContext, upgradeRefused, type WebSocketDeps } from "./proxy-upgrade.ts";
import type { Relay } from "./relay.ts";
import { handshakeProblem, upstreamHeaders } from "./upgrade-request.ts";

export function inboundWebSockets(deps: WebSocketDeps & { upstream: URL }) {
  const ctx = upgradeContext("inbound", deps);
  const origin = `${deps.upstream.protocol === "https:" ? "wss:" : "ws:"}//${deps.upstream.host}`;
  return {
    sessions: ctx.sessions,
    handler: relayHandler(DEFAULT_HANDLER_LIMITS),
    /**
     * `caller` is the SPIFFE ID the TLS bridge proved for this connection; `target` the
     * admitted path and query; `authn` what its end-user token left off and adds.
     */
    /** An upgrade refused at admission (before `upgrade`): counted, logged and traced. */
    refused: (req: Request, caller: string, answer: Response): Response => upgradeRefused(ctx, req, answer, peerService(caller), caller),
    async upgrade(req: Request, server: Server<Relay>, caller: string, target: string, authn: Authenticated = ANONYMOUS): Promise<Response | undefined> {
      const problem = handshakeProblem(req);
      if (problem) return upgradeRefused(ctx, req, errorResponse("bad-request", problem), peerService(caller), caller);
      const headers = upstreamHeaders(req);
      if (authn.strip) deleteNamed(headers, authn.strip.names);
      headers.set(CLIENT_ID_HEADER, caller);
      for (const [name, value] of authn.claimHeaders) headers.set(name, value);
      const tunnel = req.headers.get(TUNNEL_HEADER) ?? undefined;
      return proxyUpgrade(req, server, { url: origin + target, headers, peer: peerService(caller), logPeer: caller, tunnel }, ctx);
    },
  };
}
