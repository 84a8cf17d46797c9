/**
 * The proxy's listeners: Bun.listen sockets speaking HTTP/1.1 through ServerConnection,
 * in plain TCP (outbound) or in mutual TLS (inbound). On mTLS, TLS ends here, where the
 * handshake exposes the peer's certificate: the caller's SPIFFE ID is proven per
 * connection before a byte of it is read as HTTP, and every request on the connection
 * carries it. Rotation: Bun keeps a listener's TLS context for life, so a second
 * listener takes the same port (SO_REUSEPORT) before the first stops accepting; open
 * connections finish on the old certificate.
 */
import type { TCPSocketListener } from "bun";
import { peerIdFromDer } from "../../peer-identity.ts";
import { ServerConnection, type ConnectionHandler, type ConnectionLimits, type ServerSocket } from "./connection.ts";

export interface ListenerTls {
  cert: string;
  key: string;
  ca: string;
  trustDomain: string;
}

export interface ListenerEvents {
  /** An mTLS peer was refused (no certificate, wrong trust domain, failed chain). */
  onRefused(reason: string): void;
  /** A connection became usable (after the peer check on mTLS). */
  onOpen(): void;
}

export interface ListenerOptions {
  hostname: string;
  port: number;
  tls?: ListenerTls;
  limits: ConnectionLimits;
  handler: ConnectionHandler;
  events: ListenerEvents;
}

export class H1Listener {
  private listener: TCPSocketListener<ServerConnection | undefined> | undefined;
  private readonly conns = new Set<ServerConnection>();
  private tls: ListenerTls | undefined;
  private accepting = true;
  port = 0;

  constructor(private readonly opts: ListenerOptions) {
    this.tls = opts.tls;
  }

  listen(): number {
    this.listener = this.bind(this.opts.port);
    this.port = this.listener.port;
    return this.port;
  }

  /** New certificate and bundle for new connections; open ones finish on the old. */
  rotate(tls: ListenerTls): void {
    if (!this.listener) throw new Error("rotate() before listen()");
    this.tls = tls;
    const old = this.listener;
    this.listener = this.bind(this.port);
    old.stop(false);
  }

  get openConnections(): number {
    return this.conns.size;
  }

  /** Stops accepting; idle keep-alive connections close now, busy ones after their response. */
  stopAccepting(): void {
    this.accepting = false;
    this.listener?.stop(false);
    for (const conn of this.conns) conn.close();
  }

  /** Ends every connection now (after a drain deadline). */
  closeAll(): void {
    this.stopAccepting();
    for (const conn of [...this.conns]) conn.shutdown(true);
    this.listener?.stop(true);
  }

  private bind(port: number): TCPSocketListener<ServerConnection | undefined> {
    const tls = this.tls;
    const self = this;
    // reusePort is honoured by Bun.listen at run time, though its types omit it.
    return Bun.listen<ServerConnection | undefined>(<Bun.TCPSocketListenOptions<ServerConnection | undefined>>{
      hostname: this.opts.hostname,
      port,
      reusePort: tls !== undefined,
      ...(tls ? { tls: { cert: tls.cert, key: tls.key, ca: tls.ca, requestCert: true, rejectUnauthorized: true } } : {}),
      socket: {
        open(sock) {
          // Per-connection state: Bun.listen's `data` option would be one object shared by every socket.
          const conn = new ServerConnection(sock as ServerSocket, self.opts.handler, self.opts.limits, (c) => self.conns.delete(c));
          sock.data = conn;
          self.conns.add(conn);
          sock.setNoDelay(true);
          sock.timeout(self.opts.limits.idleTimeoutS);
          if (!self.accepting) conn.close();
          else if (!tls) self.ready(conn);
        },
        handshake(sock, success, authError) {
          const conn = sock.data;
          if (!conn || !tls) return;
          if (!success) {
            self.opts.events.onRefused(authError?.message ?? "handshake failed");
            return conn.shutdown(false);
          }
          const der = sock.getPeerX509Certificate()?.raw;
          const id = der ? peerIdFromDer(new Uint8Array(der), tls.trustDomain) : { ok: false as const, reason: "no client certificate" };
          if (!id.ok) {
            self.opts.events.onRefused(id.reason);
            return conn.shutdown(false);
          }
          conn.peer = id.spiffeId;
          self.ready(conn);
        },
        data: (sock, chunk) => sock.data?.onData(chunk),
        drain: (sock) => sock.data?.onDrain(),
        timeout: (sock) => sock.data?.onTimeout(),
        close: (sock) => sock.data?.onClose(),
        error: (sock) => sock.data?.onClose(),
      },
    });
  }

  private ready(conn: ServerConnection): void {
    conn.ready = true;
    this.opts.events.onOpen();
  }
}
