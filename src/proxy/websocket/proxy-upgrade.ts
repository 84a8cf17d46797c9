/**
 * The upgrade itself, the same on both listeners: open the upstream WebSocket first,
 * and answer the client 101 only once the upstream has. So a refusal reaches the
 * client as the upstream's status (403 stays 403), the subprotocol is the one the
 * upstream chose, and no message is ever accepted that has nowhere to go.
 */
import type { Server, WebSocketOptionsTLS } from "bun";
import { errorResponse } from "../errors.ts";
import type { InflightTracker } from "../inflight.ts";
import { statusClass, type ProxyMetrics } from "../metrics.ts";
import { ClientWebSocket } from "./client.ts";
import { awaitOpen } from "./handshake.ts";
import { DEFAULT_RELAY_LIMITS, Relay, type RelayLimits } from "./relay.ts";
import { WebSocketSessions } from "./sessions.ts";

export interface UpgradeContext {
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
}

export function upgradeContext(direction: "inbound" | "outbound", deps: WebSocketDeps): UpgradeContext {
  return {
    direction,
    metrics: deps.metrics,
    tracker: deps.tracker,
    sessions: deps.websockets ?? new WebSocketSessions(),
    limits: DEFAULT_RELAY_LIMITS,
    connectTimeoutMs: deps.connectTimeoutMs ?? 10_000,
  };
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
}

/** Returns the response for a failed upgrade, or undefined once the client has its WebSocket. */
export async function proxyUpgrade(req: Request, server: Server<Relay>, target: UpgradeTarget, ctx: UpgradeContext): Promise<Response | undefined> {
  const labels = { direction: ctx.direction, peer: target.peer };
  const countOpen = () => ctx.metrics.websocketsOpen.set({ direction: ctx.direction }, ctx.sessions.size);
  let upstream: ClientWebSocket;
  try {
    // Compression is off on the proxy's own hops: loopback or one mTLS link, where CPU costs more than bytes.
    upstream = new ClientWebSocket(target.url, { headers: target.headers, perMessageDeflate: false, ...(target.tls ? { tls: target.tls } : {}) });
  } catch (err) {
    target.onEnd?.();
    ctx.metrics.websocketUpgrades.inc({ ...labels, status: "4xx" });
    return errorResponse("bad-request", `cannot forward this upgrade: ${(err as Error).message}`);
  }
  const relay: Relay = new Relay(upstream, ctx.limits, () => {
    ctx.sessions.delete(relay);
    countOpen();
    target.onEnd?.();
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
      return handshake.response;
    }
    relay.upstreamOpened();
    ctx.sessions.add(relay);
    countOpen();
    // An empty value stops Bun from choosing the client's first offer on its own.
    const upgraded = server.upgrade(req, { data: relay, headers: { "sec-websocket-protocol": upstream.protocol } });
    if (!upgraded) {
      relay.abandon();
      status = 499;
      return errorResponse("bad-request", "the client left before the upgrade completed");
    }
    return undefined;
  } finally {
    req.signal.removeEventListener("abort", onAbort);
    ctx.tracker.end();
    ctx.metrics.websocketUpgrades.inc({ ...labels, status: statusClass(status) });
  }
}
