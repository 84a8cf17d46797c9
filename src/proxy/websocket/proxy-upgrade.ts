/**
 * The upgrade itself, the same on both listeners: open the upstream WebSocket first,
 * and answer the client 101 only once the upstream has. So a refusal reaches the
 * client as the upstream's status (403 stays 403), the subprotocol is the one the
 * upstream chose, and no message is ever accepted that has nowhere to go.
 */
import type { Server, WebSocketOptionsTLS } from "bun";
import { errorResponse, type ReplyCause } from "../errors.ts";
import type { InflightTracker } from "../inflight.ts";
import { countLocalReply, statusClass, type ProxyMetrics } from "../metrics.ts";
import { ClientWebSocket } from "./client.ts";
import { awaitOpen } from "./handshake.ts";
import { DEFAULT_RELAY_LIMITS, Relay, type RelayLimits } from "./relay.ts";
import { WebSocketSessions } from "./sessions.ts";
import { observeUpgrade, type UpgradeObservers } from "./upgrade-observer.ts";
import type { AccessLog } from "../access-log.ts";
import type { Tracer } from "../tracing/tracer.ts";

export interface UpgradeContext extends UpgradeObservers {
  direction: "inbound" | "outbound";
  metrics: ProxyMetrics;
  tracker: InflightTracker;
  sessions: WebSocketSessions;
  limits: RelayLimits;
  connectTimeoutMs: number;
}

export interface WebSocketDeps {
  metrics: ProxyMetrics;
  tracker: InflightTracker;
  /** Open relays, for the drain to close; one per listener if not given. */
  websockets?: WebSocketSessions;
  /** How long the upstream has to answer the upgrade, unless the target says (default 10 s). */
  connectTimeoutMs?: number;
  accessLog?: AccessLog;
  tracer?: Tracer;
}

export function upgradeContext(direction: "inbound" | "outbound", deps: WebSocketDeps): UpgradeContext {
  return {
    direction,
    metrics: deps.metrics,
    tracker: deps.tracker,
    sessions: deps.websockets ?? new WebSocketSessions(),
    limits: DEFAULT_RELAY_LIMITS,
    connectTimeoutMs: deps.connectTimeoutMs ?? 10_000,
    accessLog: deps.accessLog,
    tracer: deps.tracer,
  };
}

/** An upgrade answered before anything was opened upstream: counted, logged and traced like one refused after. */
export function upgradeRefused(ctx: UpgradeContext, req: Request, answer: Response, peer: string, logPeer = peer): Response {
  ctx.metrics.websocketUpgrades.inc({ direction: ctx.direction, peer, status: statusClass(answer.status) });
  observeUpgrade(ctx, req, undefined, logPeer)(answer.status, answeredItself(ctx, peer, answer));
  return answer;
}

/** Counts the proxy's own answer to an upgrade, and returns its cause; undefined for an upstream's refusal, relayed. */
function answeredItself(ctx: UpgradeContext, peer: string, answer: Response): ReplyCause | undefined {
  const error = answer.headers.get("x-mesh-error");
  if (error === null) return undefined;
  const cause = { error, limit: answer.headers.get("x-mesh-overflow") ?? undefined };
  countLocalReply(ctx.metrics, ctx.direction, peer, cause);
  return cause;
}

export interface UpgradeTarget {
  url: string;
  headers: Headers;
  /** Service name for metrics and messages. */
  peer: string;
  tls?: WebSocketOptionsTLS["tls"];
  /** Deadline for the upstream's 101; 0 means none. Default: the context's. */
  timeoutMs?: number;
  /** Why our own peer-identity check refused the upstream, if it did. */
  identityError?: () => Error | undefined;
  /** Runs once when the attempt or the session ends, however it ends. */
  onEnd?: () => void;
  /** Who the access log and span name: the caller's SPIFFE ID inbound; default `peer`. */
  logPeer?: string;
  /** Inbound: the name of the tunnel the upgrade came through, by which its relay can be retired. */
  tunnel?: string;
}

/** Returns the response for a failed upgrade, or undefined once the client has its WebSocket. */
export async function proxyUpgrade(req: Request, server: Server<Relay>, target: UpgradeTarget, ctx: UpgradeContext): Promise<Response | undefined> {
  const labels = { direction: ctx.direction, peer: target.peer };
  const countOpen = () => ctx.metrics.websocketsOpen.set({ direction: ctx.direction }, ctx.sessions.size);
  const outcome = observeUpgrade(ctx, req, target.headers, target.logPeer ?? target.peer);
  let upstream: ClientWebSocket;
  try {
    // Compression is off on the proxy's own hops: loopback or one mTLS link, where CPU costs more than bytes.
    upstream = new ClientWebSocket(target.url, { headers: target.headers, perMessageDeflate: false, ...(target.tls ? { tls: target.tls } : {}) });
  } catch (err) {
    target.onEnd?.();
    ctx.metrics.websocketUpgrades.inc({ ...labels, status: "4xx" });
    const answer = errorResponse("bad-request", `cannot forward this upgrade: ${(err as Error).message}`);
    outcome(answer.status, answeredItself(ctx, target.peer, answer));
    return answer;
  }
  let opened = false;
  const relay: Relay = new Relay(upstream, ctx.limits, () => {
    ctx.sessions.delete(relay);
    countOpen();
    target.onEnd?.();
    if (opened) outcome(101);
  });
  // A client that hangs up mid-handshake should not leave the upstream connecting.
  const onAbort = () => upstream.terminate();
  req.signal.addEventListener("abort", onAbort, { once: true });
  ctx.tracker.start();
  let status = 101;
  try {
    const handshake = await awaitOpen(upstream, target.timeoutMs ?? ctx.connectTimeoutMs, `${target.peer} (${target.url})`, target.identityError);
    if (!handshake.ok) {
      relay.abandon();
      status = handshake.status;
      outcome(status, answeredItself(ctx, target.peer, handshake.response));
      return handshake.response;
    }
    relay.upstreamOpened();
    ctx.sessions.add(relay, target.tunnel);
    countOpen();
    // An empty value stops Bun from choosing the client's first offer on its own.
    const upgraded = server.upgrade(req, { data: relay, headers: { "sec-websocket-protocol": upstream.protocol } });
    if (!upgraded) {
      relay.abandon();
      status = 499;
      outcome(status);
      return errorResponse("bad-request", "the client left before the upgrade completed");
    }
    opened = true;
    return undefined;
  } finally {
    req.signal.removeEventListener("abort", onAbort);
    ctx.tracker.end();
    ctx.metrics.websocketUpgrades.inc({ ...labels, status: statusClass(status) });
  }
}
