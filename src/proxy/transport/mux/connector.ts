/**
 * The client side of mesh-mux/1 for one endpoint: the TLS connections (sessions) that
 * carry a pool's connections as streams. A session is opened with the same mutual TLS
 * and SPIFFE check as a plain connection and offers mesh-mux/1 ahead of http/1.1 in
 * ALPN; a server that does not choose it (an older mesh, or any other server) is spoken
 * to in plain HTTP/1.1 connections for a while before it is asked again.
 */
import type { Socket, SocketHandler } from "bun";
import { Dial, type DialTarget, type DialTls } from "../dial.ts";
import { ConnectError } from "../h1/errors.ts";
import { alpnWire, MAX_STREAMS, MUX_ALPN } from "./frame.ts";
import { MuxSession } from "./session.ts";
import type { MuxStream, StreamHandler } from "./stream.ts";
import { readEvent } from "../../../core/clock.ts";

export interface MuxConnectorOptions {
  host: string;
  port: number;
  tls: DialTls;
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

/** One session's TLS connection: dialing, then carrying the session. */
interface Opening {
  connector: MuxConnector;
  dial: Dial<Opening>;
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
  private readonly target: DialTarget;

  constructor(private readonly opts: MuxConnectorOptions) {
    this.target = { host: opts.host, port: opts.port, tls: { ...opts.tls, alpn: OFFER }, connectTimeoutMs: opts.connectTimeoutMs };
  }

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
    return new Promise<MuxSession | undefined>((resolve, reject) => {
      const opening: Opening = { connector: this, dial: undefined as never, session: undefined, lastError: undefined };
      opening.dial = new Dial<Opening>(this.target, { ready: (sock) => resolve(this.ready(opening, sock)), fail: reject });
      opening.dial.start(opening, HANDLERS);
    });
  }

  /** Connected and the server accepted: a session if it chose mesh-mux/1. */
  private ready(opening: Opening, sock: Socket<Opening>): MuxSession | undefined {
    this.opts.onHandshake();
    if (sock.alpnProtocol !== MUX_ALPN) {
      this.plainUntil = performance.now() + PLAIN_RECHECK_MS;
      sock.end();
      return undefined;
    }
    const session = new MuxSession(sock, "client", {
      streamClosed: (s) => this.retireIfIdle(s),
      closed: (s) => {
        const i = this.sessions.indexOf(s);
        if (i >= 0) this.sessions.splice(i, 1);
      },
    });
    session.idleTimeoutS = Math.max(1, Math.ceil(this.opts.idleTimeoutMs / 1000));
    opening.session = session;
    this.sessions.push(session);
    return session;
  }

  /** An empty session closes at once when nothing more will use it, else after the idle time. */
  private retireIfIdle(session: MuxSession): void {
    if (session.streams.size > 0) return;
    if (this.isClosed || session.draining) return session.close();
    setTimeout(() => {
      if (session.streams.size === 0) session.close();
    }, this.opts.idleTimeoutMs).unref();
  }

  static readonly handlers: SocketHandler<Opening> = {
    open: (s) => s.data.dial.opened(s),
    handshake: (s, _ok, authError) => {
      // A refusal after the connect: a renegotiation that failed the checks.
      if (s.data.dial.handshake(s, authError) !== undefined) s.terminate();
    },
    // The server speaks only when asked: bytes before the session exists are a broken peer.
    data: (s, chunk) => (s.data.session !== undefined ? readEvent(s.data.session, chunk) : s.terminate()),
    drain: (s) => s.data.session?.onDrain(),
    timeout: (s) => s.data.session?.onTimeout(),
    close: (s, err) => {
      s.data.dial.socketClosed();
      const why = err ?? s.data.lastError;
      if (s.data.session !== undefined) s.data.session.onClose(why);
      else s.data.dial.closed(why);
    },
    error: (s, err) => {
      s.data.lastError ??= err;
      if (s.data.session === undefined) s.data.dial.errored(err);
    },
    connectError: (s, err) => s.data.dial.connectFailed(err),
  };
}

const HANDLERS = MuxConnector.handlers;
