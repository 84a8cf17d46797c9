/**
 * WebSocket upgrades leave the raw HTTP/1.1 path: the connection, from the upgrade
 * request on, is piped to a server that carries it (../../websocket), over a
 * Unix socket in a directory only the sidecar's user can enter, so no other user's process
 * can connect to it, let alone flood it. On an mTLS listener the tunnel adds a header to
 * the upgrade request, `x-mesh-tunnel: <a random UUID>` (WebCrypto's: 122 random bits), which that server maps to the
 *
 * Why this is safe: the name is added first, right after the request line, so a copy the
 * client sent makes the header two values, which name no tunnel (refused); a name counts
 * only while its tunnel is open; and a tunnel carries one request, the upgrade, since the
 * server closes the connection on any answer but 101.
 */
import type { Socket } from "bun";
import type { ConnectionBudget } from "../../../core/connection-budget.ts";
import type { ServerConnection } from "./connection.ts";
import { closingResponse } from "./responder.ts";
import { errorParts } from "../../errors.ts";
import { TUNNEL_HEADER } from "../../headers.ts";
import { writeQueued } from "../write-queue.ts";

/**
 * Descriptors a tunnel holds beyond the client's connection, which the listener counted:
 * the loopback client, the loopback server's side of it, and the WebSocket it opens onward.
 */
export const TUNNEL_EXTRA_DESCRIPTORS = 3;

interface Tunnel {
  conn: ServerConnection;
  /** Its TUNNEL_HEADER value, on an mTLS listener. */
  name: string | undefined;
  inner: Socket<Tunnel> | undefined;
  /** Its extra descriptors were taken from the budget (and are given back at close). */
  budgeted: boolean;
  /** Bytes for the loopback side not yet taken by its socket. */
  toInner: Uint8Array[];
  /** Reading from the client is paused until the loopback side drains. */
  held: boolean;
  closed: boolean;
}

/** `initial` with the tunnel's name added as the upgrade request's first header field (after the request line, which the parser checked). */
function named(initial: Uint8Array, name: string): Uint8Array {
  const lineEnd = initial.indexOf(10) + 1;
  const field = new TextEncoder().encode(`${TUNNEL_HEADER}: ${name}\r\n`);
  const out = new Uint8Array(initial.byteLength + field.byteLength);
  out.set(initial.subarray(0, lineEnd), 0);
  out.set(field, lineEnd);
  out.set(initial.subarray(lineEnd), lineEnd + field.byteLength);
  return out;
}

export class LoopbackTunnels {
  /** A tunnel's name (TUNNEL_HEADER) → the SPIFFE ID of its TLS peer. */
  readonly identities = new Map<string, string>();
  private readonly tunnels = new Set<Tunnel>();
  /** Upgrades answered 503 because the budget had no room for a tunnel's extra descriptors. */
  refusedOverLimit = 0;
  /** Ends a named tunnel's protocol gracefully (a WebSocket's close). */
  retireTunnel: ((name: string) => void) | undefined;

  /** `budget`: the listeners' connection budget, which also pays for each tunnel's extra descriptors. */
  constructor(
    /** The loopback server's Unix socket. */
    private readonly innerPath: string,
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
    const name = conn.peer === undefined ? undefined : crypto.randomUUID();
    const first = name === undefined ? new Uint8Array(initial) : named(initial, name);
    const t: Tunnel = { conn, inner: undefined, name, budgeted: budget !== undefined, toInner: [first], held: false, closed: false };
    if (name !== undefined) this.identities.set(name, conn.peer!);
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
      if (!t.inner || !writeQueued(t.inner, t.toInner)) hold();
    };
    conn.onTunnelClose = () => this.close(t);
    if (name !== undefined) conn.onTunnelRetire = () => this.retireTunnel?.(name);
    const tunnels = this;
    void Bun.connect<Tunnel>({
      unix: this.innerPath,
      data: t,
      socket: {
        open(inner) {
          if (t.closed) return void inner.end();
          t.inner = inner;
          conn.onTunnelDrain = () => inner.resume();
          if (writeQueued(inner, t.toInner)) release();
        },
        data(inner, chunk) {
          if (!conn.write(chunk)) inner.pause();
        },
        drain(inner) {
          if (writeQueued(inner, t.toInner)) release();
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
    if (t.name !== undefined) this.identities.delete(t.name);
    t.inner?.end();
    // Queued bytes for the client are written before its connection ends.
    t.conn.endTunnel();
  }
}
