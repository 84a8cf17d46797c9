/**
 * WebSocket upgrades leave the raw HTTP/1.1 path: the connection, from the upgrade
 * request on, is piped to a loopback Bun.serve that proxies WebSockets (../../websocket).
 * On an mTLS listener, the tunnel's loopback source port maps to the caller's SPIFFE ID,
 * which that server looks up by `server.requestIP(req).port`.
 *
 * Why this is safe: a port maps to an identity only while the tunnel's own loopback
 * connection holds it (the OS never gives two live connections from 127.0.0.1 to one
 * listener the same source port), the entry is removed when that connection closes, and
 * a request arriving on any other connection has no identity and is refused.
 */
import type { Socket } from "bun";
import type { ConnectionBudget } from "../../../core/connection-budget.ts";
import type { ServerConnection } from "./connection.ts";
import { closingResponse } from "./responder.ts";
import { errorParts } from "../../errors.ts";

/**
 * Descriptors a tunnel holds beyond the client's connection, which the listener counted:
 * the loopback client, the loopback server's side of it, and the WebSocket it opens onward.
 */
export const TUNNEL_EXTRA_DESCRIPTORS = 3;

interface Tunnel {
  conn: ServerConnection;
  inner: Socket<Tunnel> | undefined;
  /** Its extra descriptors were taken from the budget (and are given back at close). */
  budgeted: boolean;
  /** Bytes for the loopback side not yet taken by its socket. */
  toInner: Uint8Array[];
  /** Reading from the client is paused until the loopback side drains. */
  held: boolean;
  closed: boolean;
}

/** Writes what it can and queues the rest; true when everything went out. */
function writeAll(sock: Socket<Tunnel>, queue: Uint8Array[]): boolean {
  while (queue.length) {
    const head = queue[0]!;
    const n = sock.write(head);
    if (n < head.byteLength) {
      queue[0] = head.subarray(Math.max(n, 0));
      return false;
    }
    queue.shift();
  }
  return true;
}

export class LoopbackTunnels {
  /** Loopback source port of a tunnel → the SPIFFE ID of its TLS peer. */
  readonly identities = new Map<number, string>();
  private readonly tunnels = new Set<Tunnel>();
  /** Upgrades answered 503 because the budget had no room for a tunnel's extra descriptors. */
  refusedOverLimit = 0;

  /** `budget`: the listeners' connection budget, which also pays for each tunnel's extra descriptors. */
  constructor(
    private readonly innerPort: () => number,
    private readonly budget?: ConnectionBudget,
    private readonly onOverLimit?: () => void,
  ) {}

  get count(): number {
    return this.tunnels.size;
  }

  /** Takes `conn` over: `initial` (the upgrade request and anything after it) goes first. */
  open(conn: ServerConnection, initial: Uint8Array): void {
    const budget = this.budget;
    if (budget !== undefined && !budget.take(TUNNEL_EXTRA_DESCRIPTORS)) {
      this.refusedOverLimit++;
      this.onOverLimit?.();
      const detail = `a WebSocket takes ${TUNNEL_EXTRA_DESCRIPTORS + 1} of the proxy's ${budget.limit} connection places, and they are held`;
      conn.write(closingResponse(errorParts("overflow", detail, { "x-mesh-overflow": "websockets" })));
      conn.close();
      return;
    }
    const t: Tunnel = { conn, inner: undefined, budgeted: budget !== undefined, toInner: [new Uint8Array(initial)], held: false, closed: false };
    this.tunnels.add(t);
    const hold = () => {
      if (t.held) return;
      t.held = true;
      conn.pauseReading();
    };
    const release = () => {
      if (!t.held) return;
      t.held = false;
      conn.resumeReading();
    };
    // Until the loopback connection opens, one read is held and reading stops.
    hold();
    conn.tunnel = (chunk) => {
      if (t.closed) return;
      t.toInner.push(chunk);
      if (!t.inner || !writeAll(t.inner, t.toInner)) hold();
    };
    conn.onTunnelClose = () => this.close(t);
    const tunnels = this;
    void Bun.connect<Tunnel>({
      hostname: "127.0.0.1",
      port: this.innerPort(),
      data: t,
      socket: {
        open(inner) {
          if (t.closed) return void inner.end();
          t.inner = inner;
          if (conn.peer !== undefined) tunnels.identities.set(inner.localPort, conn.peer);
          conn.onTunnelDrain = () => inner.resume();
          if (writeAll(inner, t.toInner)) release();
        },
        data(inner, chunk) {
          if (!conn.write(chunk)) inner.pause();
        },
        drain(inner) {
          if (writeAll(inner, t.toInner)) release();
        },
        close: () => tunnels.close(t),
        error: () => tunnels.close(t),
      },
    }).catch(() => this.close(t));
  }

  private close(t: Tunnel): void {
    if (t.closed) return;
    t.closed = true;
    t.toInner.length = 0;
    this.tunnels.delete(t);
    if (t.budgeted) this.budget!.release(TUNNEL_EXTRA_DESCRIPTORS);
    if (t.inner) {
      this.identities.delete(t.inner.localPort);
      t.inner.end();
    }
    // Queued bytes for the client are written before its connection ends.
    t.conn.endTunnel();
  }
}
