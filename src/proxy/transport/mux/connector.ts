/**
 * The client side of mesh-mux/1 for one endpoint: the TLS connections (sessions) that
 * carry a pool's connections as streams. A session is opened with the same mutual TLS
 * and SPIFFE check as a plain connection and offers mesh-mux/1 ahead of http/1.1 in
 * ALPN; a server that does not choose it (an older mesh, or any other server) is spoken
 * to in plain HTTP/1.1 connections for a while before it is asked again.
 */
import type { Socket, SocketHandler } from "bun";
import { ConnectError, connectErrorOf } from "../h1/errors.ts";
import { handshakeVerdict, type VerifyPeer } from "../h1/tls-verify.ts";
import { alpnWire, MAX_STREAMS, MUX_ALPN } from "./frame.ts";
import { MuxSession } from "./session.ts";
import type { MuxStream, StreamHandler } from "./stream.ts";

export interface MuxConnectorOptions {
  host: string;
  port: number;
  tls: { cert: string; key: string; ca: string; verifyPeer: VerifyPeer; serverName?: string };
  /** TCP connect, TLS handshake and peer check. */
  connectTimeoutMs: number;
  /** A session without streams this long is closed. */
  idleTimeoutMs: number;
  /** A TLS handshake completed and the peer was accepted. */
  onHandshake(): void;
}

const OFFER = alpnWire([MUX_ALPN, "http/1.1"]);
/** How long an endpoint that declined mesh-mux/1 gets plain connections before it is asked again. */
const PLAIN_RECHECK_MS = 60_000;

interface Opening {
  connector: MuxConnector;
  resolve(session: MuxSession | undefined): void;
  reject(err: Error): void;
  /** Pending while the connect is; cleared when it succeeded or failed. */
  timer: Timer | undefined;
  failed: boolean;
  socket: Socket<Opening> | undefined;
  session: MuxSession | undefined;
  lastError: Error | undefined;
}

export class MuxConnector {
  private readonly sessions: MuxSession[] = [];
  private opening: Promise<MuxSession | undefined> | undefined;
  /** Streams promised out of the session being opened. */
  private promised = 0;
  private plainUntil = 0;
  private isClosed = false;

  constructor(private readonly opts: MuxConnectorOptions) {}

  /**
   * A new stream for `handler`, on a session with room (opened if need be); undefined
   * when the endpoint speaks only HTTP/1.1 and the caller should connect plainly.
   */
  async open(handler: StreamHandler): Promise<MuxStream | undefined> {
    // Sessions fill while we wait for one: look again after each wait, a few times at most.
    for (let tries = 0; tries < 3; tries++) {
      for (const s of this.sessions) if (s.hasRoom) return s.openStream(handler);
      const session = await this.nextSession();
      if (session === undefined) return undefined;
      if (session.hasRoom) return session.openStream(handler);
    }
    throw new ConnectError(`no session to ${this.opts.host}:${this.opts.port} had room for a stream`, "reset");
  }

  /** The session being opened, or a new one: each is promised to at most MAX_STREAMS callers. */
  private nextSession(): Promise<MuxSession | undefined> {
    if (performance.now() < this.plainUntil) return Promise.resolve(undefined);
    if (this.isClosed) return Promise.reject(new ConnectError("the connection pool is closed", "closed"));
    if (this.opening === undefined || this.promised >= MAX_STREAMS) {
      const opening = this.connect();
      this.opening = opening;
      this.promised = 0;
      const forget = () => {
        if (this.opening === opening) this.opening = undefined;
      };
      opening.then(forget, forget);
    }
    this.promised++;
    return this.opening;
  }

  /** Closes sessions as their streams end; opens no more. */
  close(): void {
    this.isClosed = true;
    for (const s of [...this.sessions]) if (s.streams.size === 0) s.close();
  }

  private connect(): Promise<MuxSession | undefined> {
    const { host, port, tls, connectTimeoutMs } = this.opts;
    return new Promise<MuxSession | undefined>((resolve, reject) => {
      const opening: Opening = { connector: this, resolve, reject, timer: undefined, failed: false, socket: undefined, session: undefined, lastError: undefined };
      opening.timer = setTimeout(() => fail(opening, new ConnectError(`connect to ${host}:${port} timed out after ${connectTimeoutMs} ms`, "timeout")), connectTimeoutMs);
      try {
        Bun.connect<Opening>({
          hostname: host,
          port,
          data: opening,
          socket: HANDLERS,
          // As in ../h1/connection.ts: the chain is verified against `ca` and the verdict enforced in handshake().
          tls: { cert: tls.cert, key: tls.key, ca: tls.ca, rejectUnauthorized: false, ALPNProtocols: OFFER, ...(tls.serverName ? { serverName: tls.serverName } : {}) },
        }).catch((err: Error) => fail(opening, connectErrorOf(err, this.opts)));
      } catch (err) {
        fail(opening, new ConnectError(`cannot connect to ${host}:${port}: ${(err as Error).message}`, "tls", { cause: err }));
      }
    });
  }

  private onHandshake(sock: Socket<Opening>, authError: Error | null): void {
    const opening = sock.data;
    const refused = handshakeVerdict(sock, authError, this.opts.tls.verifyPeer);
    if (opening.timer === undefined) {
      // Timed out already; or a later handshake (TLS 1.2 renegotiation), which must pass the same checks.
      if (opening.failed || refused !== undefined) sock.terminate();
      return;
    }
    if (refused !== undefined) return fail(opening, refused);
    this.opts.onHandshake();
    settle(opening);
    if (sock.alpnProtocol !== MUX_ALPN) {
      this.plainUntil = performance.now() + PLAIN_RECHECK_MS;
      sock.end();
      return opening.resolve(undefined);
    }
    sock.setNoDelay(true);
    const session = new MuxSession(sock, "client", {
      streamClosed: (s) => this.retireIfIdle(s),
      closed: (s) => {
        const i = this.sessions.indexOf(s);
        if (i >= 0) this.sessions.splice(i, 1);
      },
    });
    opening.session = session;
    this.sessions.push(session);
    opening.resolve(session);
  }

  /** An empty session closes at once when nothing more will use it, else after the idle time. */
  private retireIfIdle(session: MuxSession): void {
    if (session.streams.size > 0) return;
    if (this.isClosed || session.draining) return session.close();
    setTimeout(() => {
      if (session.streams.size === 0) session.close();
    }, this.opts.idleTimeoutMs).unref();
  }

  private onClose(sock: Socket<Opening>, err: Error | undefined): void {
    const opening = sock.data;
    if (opening.session !== undefined) return opening.session.onClose(err ?? opening.lastError);
    const why = err?.message ?? opening.lastError?.message ?? "closed by the server";
    fail(opening, new ConnectError(`connection to ${this.opts.host}:${this.opts.port} failed during the TLS handshake: ${why}`, "tls"));
  }

  static readonly handlers: SocketHandler<Opening> = {
    open: (s) => {
      s.data.socket = s;
      if (s.data.failed) s.terminate();
    },
    handshake: (s, _ok, authError) => s.data.connector.onHandshake(s, authError),
    // The server speaks only when asked: bytes before the session exists are a broken peer.
    data: (s, chunk) => (s.data.session !== undefined ? s.data.session.onData(chunk) : s.terminate()),
    drain: (s) => s.data.session?.onDrain(),
    close: (s, err) => s.data.connector.onClose(s, err),
    error: (s, err) => {
      s.data.lastError ??= err;
      if (s.data.session === undefined) fail(s.data, new ConnectError(`TLS handshake with ${s.data.connector.opts.host}:${s.data.connector.opts.port} failed: ${err.message}`, "tls", { cause: err }));
    },
    connectError: (s, err) => fail(s.data, connectErrorOf(err, s.data.connector.opts)),
  };
}

const HANDLERS = MuxConnector.handlers;

function settle(opening: Opening): void {
  clearTimeout(opening.timer);
  opening.timer = undefined;
}

function fail(opening: Opening, err: Error): void {
  if (opening.timer === undefined) return;
  settle(opening);
  opening.failed = true;
  // terminate(): in a TLS 1.3 handshake callback this refuses before our certificate is sent.
  opening.socket?.terminate();
  opening.reject(err);
}
