/**
 * The proxy's listeners: Bun.listen sockets speaking HTTP/1.1 through ServerConnection,
 * in plain TCP (outbound) or in mutual TLS (inbound). On mTLS, TLS ends here, where the
 * handshake exposes the peer's certificate: the caller's SPIFFE ID is proven per
 * connection before a byte of it is read as HTTP, and every request on the connection
 * carries it. Rotation: Bun keeps a listener's TLS context for life, so a second
 * listener takes the same port (SO_REUSEPORT) before the first stops accepting; open
 * connections are asked to move to it, and none outlives the certificates that proved it
 * (../credential-expiry.ts).
 *
 * An mTLS connection whose client chose mesh-mux/1 in ALPN (another mesh proxy) carries
 * many HTTP/1.1 connections as streams (../mux); each is a ServerConnection with the
 * identity the connection's handshake proved. One that chose mesh-tcp/1 carries an opaque
 * TCP connection, and is handed over whole (../../tcp).
 */
import type { Socket, TCPSocketListener } from "bun";
import { peerIdFromDer } from "../../peer-identity.ts";
import { alpnWire, MUX_ALPN } from "../mux/frame.ts";
import { MuxSession } from "../mux/session.ts";
import { MuxStream } from "../mux/stream.ts";
import { ServerConnection, type ConnectionHandler, type ConnectionLimits } from "./connection.ts";
import { closingResponse } from "./responder.ts";
import { errorParts } from "../../errors.ts";
import { SlotList } from "../../../core/slot-list.ts";
import { readEvent } from "../../../core/clock.ts";
import type { ConnectionBudget } from "../../../core/connection-budget.ts";
import { TCP_ALPN } from "../../tcp/wire.ts";
import { CredentialExpiry, trustWithdrawn, type CredentialEnd } from "../credential-expiry.ts";
import { bindClaimed, type PortClaim } from "../unshared-port.ts";
import { GoawayGraces } from "./goaway-graces.ts";

// "h2" last: a client that offers HTTP/1.1 too keeps it (the service may speak nothing else); one offering h2 alone (gRPC) is handed on whole once its preface is read (../../h2).
const ALPN = alpnWire([MUX_ALPN, "http/1.1", "h2", TCP_ALPN]);
/** How long a draining listener still takes streams a client opened before it heard GOAWAY. */
const GOAWAY_GRACE_MS = 1000;
/** How long connections proven by a root the bundle no longer holds may finish what they carry, by default. */
const WITHDRAWN_TRUST_GRACE_MS = 10_000;

/** What takes over an mTLS socket whose peer chose mesh-tcp/1. */
export interface TcpSocketOwner {
  onData(chunk: Buffer): void;
  onDrain(): void;
  onTimeout(): void;
  onClose(err?: Error): void;
  /** The peer's FIN: its direction alone is over. */
  onEnd(): void;
}

/**
 * A plain connection mesh redirect sent that is not (or not yet) read as HTTP: what owns
 * it, asked for once it has its place. `http` hands it back to be read as HTTP after all,
 * starting with the bytes the owner read.
 */
export interface RedirectedTcp {
  adopt(http: (initial: Buffer) => void): TcpSocketOwner;
}

/** What a listener socket's events go to: an HTTP/1.1 connection, a mux session, or a carried TCP connection. */
type SocketOwner = ServerConnection | MuxSession | TcpSocketOwner;

export interface ListenerTls {
  cert: string;
  key: string;
  ca: string;
  trustDomain: string;
  /** When `cert` ends (epoch ms): no connection it served may outlive it. */
  notAfterMs: number;
}

export interface ListenerEvents {
  /** An mTLS peer was refused (no certificate, wrong trust domain, failed chain). */
  onRefused(reason: string): void;
  /** A connection became usable (after the peer check on mTLS). */
  onOpen(): void;
  /** A connection was closed at accept: the budget was spent. */
  onOverLimit?(): void;
  /** An mTLS connection was asked to end (retired), or ended (cut), for its certificates. */
  onCredentialEnd?(why: CredentialEnd): void;
}

export interface ListenerOptions {
  hostname: string;
  port: number;
  tls?: ListenerTls;
  limits: ConnectionLimits;
  handler: ConnectionHandler;
  events: ListenerEvents;
  /** Connections this listener may hold, shared with the process's other listeners. */
  budget?: ConnectionBudget;
  /** mTLS only: takes connections whose peer chose mesh-tcp/1; without it, none can. */
  tcp?: (socket: Socket<unknown>, peer: string) => TcpSocketOwner;
  /** mTLS only: how long connections proven by a root a rotation withdrew may finish what they carry (default 10 s). */
  withdrawnTrustGraceMs?: number;
  /** Plain only: at accept, tells a connection mesh redirect sent that is not read as HTTP from the start (carried whole, or sniffed first); the rest are HTTP. */
  redirected?: (socket: Socket<unknown>) => RedirectedTcp | undefined;
}

export class H1Listener {
  private listener: TCPSocketListener<SocketOwner | undefined> | undefined;
  /** Its address, held against other mesh processes while it accepts (../unshared-port.ts). */
  private claim: PortClaim | undefined;
  /** The same listener at a second address (alsoListen()), plain only. */
  private twin: TCPSocketListener<SocketOwner | undefined> | undefined;
  /** SlotLists, not Sets: clients that open a connection per request add and delete one each time. */
  private readonly conns = new SlotList<ServerConnection>();
  private readonly sessions = new Set<MuxSession>();
  /** The HTTP/1.1 connections that are streams of the sessions. */
  private readonly streams = new SlotList<ServerConnection>();
  private tls: ListenerTls | undefined;
  private accepting = true;
  /** Connections closed at accept because the budget was spent. */
  refusedOverLimit = 0;
  /** Sessions told GOAWAY, until their grace for streams opened before it was heard ends. */
  private readonly graces = new GoawayGraces();
  /** mTLS connections, each until its own or its peer's certificate ends. */
  private readonly expiry = new CredentialExpiry<Socket<SocketOwner | undefined>>(
    (sock, why) => {
      this.opts.events.onCredentialEnd?.(why);
      this.retireOwner(sock.data);
    },
    (sock, why) => {
      this.opts.events.onCredentialEnd?.(why);
      sock.terminate();
    },
  );
  /** Each replaced certificate and bundle → when connections proven under it are cut (Infinity: not before their own end). */
  private readonly replacedCutAt = new WeakMap<ListenerTls, number>();
  port = 0;

  constructor(private readonly opts: ListenerOptions) {
    this.tls = opts.tls;
  }

  listen(): number {
    // Only an mTLS listener rotates, beside itself (SO_REUSEPORT): it must not start beside another process's (../unshared-port.ts).
    if (this.tls) ({ bound: this.listener, claim: this.claim } = bindClaimed(this.opts.hostname, this.opts.port, (port) => this.bind(port)));
    else this.listener = this.bind(this.opts.port);
    this.port = this.listener.port;
    return this.port;
  }

  /** Takes connections at `hostname` too, at the same port, as one listener (the other family's loopback); throws if it cannot bind. */
  alsoListen(hostname: string): void {
    if (!this.listener || this.tls) throw new Error("alsoListen() before listen(), or on an mTLS listener");
    this.twin = this.bind(this.port, hostname);
  }

  /**
   * New certificate and bundle for new connections. Open ones are asked to move
   * (HTTP/1.1 after its response, sessions and HTTP/2 by GOAWAY): under steady traffic
   * one would never end. A carried TCP stream cannot move; it keeps to its certificates'
   * end, unless the bundle lost a root: then every connection proven before is cut soon.
   */
  rotate(tls: ListenerTls): void {
    if (!this.listener || !this.tls) throw new Error("rotate() before listen(), or on a plain listener");
    const before = this.tls;
    this.tls = tls;
    // Only what the replaced bundle proved: connections made under this one keep to their own end.
    const cutBy = trustWithdrawn(before.ca, tls.ca) ? Date.now() + (this.opts.withdrawnTrustGraceMs ?? WITHDRAWN_TRUST_GRACE_MS) : Infinity;
    this.replacedCutAt.set(before, cutBy);
    const old = this.listener;
    this.listener = this.bind(this.port);
    old.stop(false);
    this.expiry.retireAll(cutBy);
  }

  /** Retired: an HTTP/1.1 connection (or its tunnel) and a mux session end gracefully; carried TCP has no way to. */
  private retireOwner(owner: SocketOwner | undefined): void {
    if (owner instanceof ServerConnection) owner.close();
    else if (owner instanceof MuxSession) this.retire([owner]);
  }

  /** TCP connections: HTTP/1.1 ones and mux sessions (a session stays open until its streams and its output are done). */
  get openConnections(): number {
    return this.conns.size + this.sessions.size;
  }

  /** Whether a retired session may still take streams its caller opened before it heard GOAWAY. */
  get inGrace(): boolean {
    return this.graces.pending;
  }

  /** Settles once no retired session is in its grace (at once if none is). */
  gracesEnded(): Promise<void> {
    return this.graces.ended();
  }

  /**
   * Stops accepting; idle keep-alive connections close now, busy ones after their
   * response. Mux sessions are retired (see retire()).
   */
  stopAccepting(): void {
    if (!this.accepting) return;
    this.accepting = false;
    this.listener?.stop(false);
    this.twin?.stop(false);
    this.claim?.release();
    for (const conn of this.conns.toArray()) conn.close();
    this.retire([...this.sessions]);
  }

  /**
   * GOAWAY now; streams the client opened before it heard are still served for a grace
   * period; then new streams are refused and the sessions' streams close like
   * connections (idle ones now, busy ones after their response), and so do the sessions.
   */
  private retire(sessions: MuxSession[]): void {
    if (sessions.length === 0) return;
    for (const session of sessions) session.goAway();
    this.graces.start(GOAWAY_GRACE_MS, () => {
      for (const session of sessions) session.refuseStreams();
      for (const conn of this.streams.toArray()) if (conn.socket instanceof MuxStream && sessions.includes(conn.socket.session)) conn.close();
    });
  }
  /** Ends every connection now (after a drain deadline). */
  closeAll(): void {
    this.stopAccepting();
    this.graces.cancelAll();
    for (const conn of [...this.conns.toArray(), ...this.streams.toArray()]) conn.shutdown(true);
    for (const session of [...this.sessions]) session.destroy(new Error("the listener closed"));
    this.listener?.stop(true);
    this.twin?.stop(true);
    this.expiry.close();
  }

  private bind(port: number, hostname = this.opts.hostname): TCPSocketListener<SocketOwner | undefined> {
    const tls = this.tls;
    const self = this;
    // reusePort is honoured by Bun.listen at run time, though its types omit it.
    return Bun.listen<SocketOwner | undefined>(<Bun.TCPSocketListenOptions<SocketOwner | undefined>>{
      hostname,
      port,
      reusePort: tls !== undefined,
      // A carried TCP connection's FIN ends one direction (end() below). For HTTP a client's FIN is its leaving, as by
      // default: its request is cancelled at the service (nginx's 499, Envoy's downstream reset).
      allowHalfOpen: tls !== undefined || this.opts.redirected !== undefined,
      ...(tls ? { tls: { cert: tls.cert, key: tls.key, ca: tls.ca, requestCert: true, rejectUnauthorized: true, ALPNProtocols: ALPN } } : {}),
      socket: {
        open(sock) {
          const redirected = self.opts.redirected?.(sock as Socket<unknown>);
          // A refused TCP connection is reset, as its own listener's are: HTTP words would reach a database client as data.
          if (self.opts.budget !== undefined && !self.opts.budget.take()) return self.refuseOverLimit(sock, redirected !== undefined);
          if (redirected !== undefined) {
            if (self.accepting) return void (sock.data = redirected.adopt((initial) => self.serveHttp(sock, initial)));
            self.opts.budget?.release();
            return void sock.terminate();
          }
          const conn = self.httpConnection(sock);
          if (!self.accepting) conn.close();
          else if (!tls) self.ready(conn);
        },
        handshake(sock, success, authError) {
          const conn = sock.data;
          if (!(conn instanceof ServerConnection) || !tls) return;
          // Bun reports a client certificate that did not verify as a successful handshake with an
          // error (and then drops the connection): refused here, counted and said, not let through.
          if (!success || authError) {
            self.opts.events.onRefused(authError?.message ?? "handshake failed");
            return conn.shutdown(false);
          }
          const der = sock.getPeerX509Certificate()?.raw;
          const id = der ? peerIdFromDer(new Uint8Array(der), tls.trustDomain) : { ok: false as const, reason: "no client certificate" };
          if (!id.ok) {
            self.opts.events.onRefused(id.reason);
            return conn.shutdown(false);
          }
          if (sock.alpnProtocol === TCP_ALPN && (self.opts.tcp === undefined || !self.accepting)) return conn.shutdown(false);
          self.expiry.watch(sock, Math.min(id.notAfterMs, tls.notAfterMs));
          if (sock.alpnProtocol === MUX_ALPN) {
            self.conns.delete(conn);
            sock.data = self.openSession(sock, id.spiffeId);
            self.opts.events.onOpen();
          } else if (sock.alpnProtocol === TCP_ALPN) {
            self.conns.delete(conn);
            sock.data = self.opts.tcp!(sock as Socket<unknown>, id.spiffeId);
            self.opts.events.onOpen();
          } else {
            conn.peer = id.spiffeId;
            self.ready(conn);
          }
          // Its handshake used a certificate and bundle replaced meanwhile.
          if (tls !== self.tls) self.expiry.retireNow(sock, self.replacedCutAt.get(tls) ?? Infinity);
        },
        data: (sock, chunk) => {
          if (sock.data !== undefined) readEvent(sock.data, chunk);
        },
        drain: (sock) => sock.data?.onDrain(),
        end: (sock) => {
          const owner = sock.data;
          if (owner !== undefined && "onEnd" in owner) owner.onEnd();
          else sock.end();
        },
        timeout: (sock) => sock.data?.onTimeout(),
        close: (sock, err) => {
          // Only refused sockets have no owner, and they took nothing from the budget.
          if (sock.data !== undefined) self.opts.budget?.release();
          if (tls) self.expiry.forget(sock);
          sock.data?.onClose(err);
        },
        error: (sock, err) => {
          if (tls) self.expiry.forget(sock);
          sock.data?.onClose(err);
        },
      },
    });
  }

  /** Plain HTTP/1.1 (the service's own calls) is told why; on mTLS no handshake is spent on it, and opaque TCP is reset. */
  private refuseOverLimit(sock: Socket<SocketOwner | undefined>, tcp: boolean): void {
    this.refusedOverLimit++;
    this.opts.events.onOverLimit?.();
    if (this.tls !== undefined || tcp) return sock.terminate();
    sock.write(closingResponse(errorParts("overflow", `the proxy holds its limit of ${this.opts.budget!.limit} connections`)));
    sock.end();
  }

  /** The socket read as HTTP/1.1: its owner now (ready once an mTLS peer passed its checks). */
  private httpConnection(sock: Socket<SocketOwner | undefined>): ServerConnection {
    // Per-connection state: Bun.listen's `data` option would be one object shared by every socket.
    const conn = new ServerConnection(sock, this.opts.handler, this.opts.limits, (c) => this.conns.delete(c));
    sock.data = conn;
    this.conns.add(conn);
    sock.setNoDelay(true);
    sock.timeout(this.opts.limits.idleTimeoutS);
    return conn;
  }

  /** A redirected plain connection read as HTTP after all, from `initial` (the bytes its first owner read). */
  private serveHttp(sock: Socket<SocketOwner | undefined>, initial: Buffer): void {
    const conn = this.httpConnection(sock);
    if (!this.accepting) return conn.close();
    this.ready(conn);
    if (initial.byteLength > 0) readEvent(conn, initial);
  }

  private openSession(sock: Socket<SocketOwner | undefined>, peer: string): MuxSession {
    const session = new MuxSession(sock, "server", {
      accept: (stream) => this.openStream(stream, peer),
      closed: (s) => this.sessions.delete(s),
    });
    session.idleTimeoutS = this.opts.limits.idleTimeoutS;
    this.sessions.add(session);
    if (!this.accepting) this.retire([session]);
    return session;
  }

  private openStream(stream: MuxStream, peer: string): ServerConnection {
    const conn = new ServerConnection(stream, this.opts.handler, this.opts.limits, (c) => this.streams.delete(c));
    conn.peer = peer;
    conn.ready = true;
    this.streams.add(conn);
    return conn;
  }

  private ready(conn: ServerConnection): void {
    conn.ready = true;
    this.opts.events.onOpen();
  }
}
