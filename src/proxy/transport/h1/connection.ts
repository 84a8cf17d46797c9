/**
 * One HTTP/1.1 connection on a raw Bun socket (TCP or TLS) or on a stream of a mesh-mux
 * session to another mesh proxy (../mux), carrying one exchange at a
 * time. It connects (TCP + TLS handshake + peer check, under one timeout), writes the
 * request head in one write and streams the body, parses the response head strictly and
 * hands head and body to the exchange's sink as they arrive. It tells its owner when it may carry another exchange
 * and when it is gone; any doubt about where the next response starts (framing error,
 * bytes after a response, a response before the request was fully sent, a cancelled
 * body) destroys it instead. The request side (its writes, and its body's pump) is its
 * base class's, request-output.ts.
 */
import type { AbortLike } from "./abort.ts";
import type { Socket, SocketHandler } from "bun";
import { abortError, isKeepAliveRace, ResetError } from "./errors.ts";
import { closeError } from "./close-error.ts";
import { headWithBody, type RequestBody } from "./request-body.ts";
import type { PreparedRequest } from "./request-head.ts";
import { Exchange, Phase } from "./exchange.ts";
import type { ResponseSink } from "./response-sink.ts";
import { HeadReader, restOf } from "./head-reader.ts";
import { Dial, type DialTarget, type DialTls } from "../dial.ts";
import type { MuxConnector } from "../mux/connector.ts";
import type { StreamHandler } from "../mux/stream.ts";
import { readEvent } from "../../../core/clock.ts";
import { RequestOutput } from "./request-output.ts";

export type ConnectionTls = DialTls;

export interface ConnectionOptions extends DialTarget {
  /** Connections become streams of shared TLS sessions when the server speaks mesh-mux/1 (../mux). */
  mux?: MuxConnector;
}

export interface ConnectionOwner {
  /** The exchange is over and the connection can carry another. */
  reusable(conn: H1Connection): void;
  /** The connection is gone, once, whatever the state (not called when connect fails). */
  closed(conn: H1Connection): void;
  /** A TLS handshake completed and the peer was accepted. */
  handshake(): void;
  /** A reused connection lost the keep-alive race with this request (isKeepAliveRace): send it again elsewhere. */
  retryStale(req: PreparedRequest, body: RequestBody | null, sink: ResponseSink, signal: AbortLike | undefined): void;
}

const ONCE = { once: true } as const;

export class H1Connection extends RequestOutput implements StreamHandler {
  /** Exchanges completed; > 0 means the next one reuses the connection. */
  served = 0;
  /** When it last became idle, eventNow() (set by the pool). */
  idleSince = 0;
  /** Its index in its pool's busy list, -1 when not busy (SlotList). */
  slot = -1;
  /** Destroy instead of reuse once the current exchange is over (pool closing). */
  closeWhenDone = false;

  /** The connect step, on a socket of its own (not on a mux stream). */
  private dial: Dial<H1Connection> | undefined;
  /** The response head being read, possibly over several reads. */
  private readonly head = new HeadReader();
  private paused = false;
  private lastError: Error | undefined;

  private constructor(
    private readonly owner: ConnectionOwner,
    private readonly opts: ConnectionOptions,
  ) {
    super();
  }

  static connect(opts: ConnectionOptions, owner: ConnectionOwner): Promise<H1Connection> {
    return opts.mux !== undefined ? H1Connection.connectStream(opts, owner, opts.mux) : H1Connection.connectSocket(opts, owner);
  }

  /** A stream of a mux session to the endpoint; a socket of its own when the endpoint does not speak mux. */
  private static async connectStream(opts: ConnectionOptions, owner: ConnectionOwner, mux: MuxConnector): Promise<H1Connection> {
    const conn = new H1Connection(owner, opts);
    const stream = await mux.open(conn);
    if (stream === undefined) return H1Connection.connectSocket(opts, owner);
    conn.socket = stream;
    return conn;
  }

  private static connectSocket(opts: ConnectionOptions, owner: ConnectionOwner): Promise<H1Connection> {
    const conn = new H1Connection(owner, opts);
    return new Promise<H1Connection>((resolve, reject) => {
      const dial = new Dial<H1Connection>(opts, {
        ready: (sock) => {
          conn.socket = sock;
          if (opts.tls !== undefined) owner.handshake();
          resolve(conn);
        },
        fail: (err) => {
          conn.isClosed = true;
          reject(err);
        },
      });
      conn.dial = dial;
      dial.start(conn, HANDLERS);
    });
  }

  get idle(): boolean {
    return this.ex === undefined && !this.isClosed;
  }

  get alive(): boolean {
    return !this.isClosed && this.socket !== undefined && this.socket.readyState === 1;
  }

  /**
   * Sends one request; the response (or the failure) goes to `sink`. The connection
   * must be idle.
   */
  exchange(req: PreparedRequest, body: RequestBody | null, sink: ResponseSink, signal: AbortLike | undefined): void {
    // Closed since it was handed out, nothing written: the keep-alive race, if it was reused.
    if (this.isClosed) {
      if (this.served > 0) return this.owner.retryStale(req, body, sink, signal);
      return sink.fail(new ResetError(`connection to ${this.opts.host}:${this.opts.port} closed before the request was written`, false, 0));
    }
    const ex = new Exchange(this, req, body, sink, signal);
    this.ex = ex;
    if (signal) {
      if (signal.aborted) return this.abortExchange(ex, signal.reason);
      ex.listening = true;
      signal.addEventListener("abort", ex, ONCE);
    }
    // A small body that is all here goes out with its head: one write, one TLS record, no pump.
    const withBody = body !== null && req.framing.kind === "length" ? headWithBody(req, req.framing.length, body) : undefined;
    if (withBody !== undefined) return this.sendWhole(ex, withBody, 0, withBody.byteLength);
    if (body === null) return this.sendWhole(ex, req.head, req.headStart, req.headEnd);
    if (this.write(req.head, req.headStart, req.headEnd) || !this.isClosed) void this.sendBody(ex, body);
  }

  /** Closes an idle connection (gracefully: FIN, not RST), or the current one once its exchange is over. */
  close(): void {
    if (this.ex === undefined) this.shutdown(undefined, "end");
    else this.closeWhenDone = true;
  }

  // ---- request side ----

  protected requestSent(ex: Exchange): void {
    ex.requestDone = true;
    if (ex.phase === Phase.Done) this.release(ex);
  }

  // ---- response side ----

  onData(chunk: Buffer): void {
    const ex = this.ex;
    // Bytes before any of a request went out are nobody's answer (a service writing on an
    // idle connection), even when a request was given the connection this turn and waits
    // to be written: whatever they are, no response on it could be trusted.
    if (ex === undefined || !ex.wrote) return this.unsolicited(ex);
    ex.received += chunk.byteLength;
    try {
      if (ex.phase === Phase.Head) this.onHeadData(ex, chunk);
      else if (ex.phase === Phase.Body) this.onBodyData(ex, chunk);
      else ex.reusable = false; // after the response, while the request is still going out
    } catch (err) {
      this.shutdown(err as Error);
    }
  }

  /**
   * Retires the connection. A request held to the end of the turn was not sent: on a
   * reused connection it goes, as it is, on a fresh one (once: a fresh connection is not
   * retried again); otherwise it fails as the connection closing before an answer.
   */
  private unsolicited(ex: Exchange | undefined): void {
    const held = this.held;
    if (ex === undefined || held === undefined || this.served === 0) return this.shutdown(undefined);
    const whole: PreparedRequest = { ...ex.req, head: held, headStart: this.heldStart, headEnd: this.heldEnd };
    this.ex = undefined;
    this.detach(ex);
    this.shutdown(undefined);
    this.owner.retryStale(whole, null, ex.sink, ex.signal);
  }

  private onHeadData(ex: Exchange, chunk: Buffer): void {
    const head = this.head.feed(chunk);
    if (head && ex.begin(head, head.raw.buf, restOf(head))) this.responseDone(ex);
  }

  private onBodyData(ex: Exchange, chunk: Uint8Array): void {
    if (ex.more(chunk)) this.responseDone(ex);
  }

  private responseDone(ex: Exchange): void {
    ex.sink.end();
    ex.phase = Phase.Done;
    if (ex.requestDone) this.release(ex);
    // Otherwise the upstream answered before taking the whole request (an early 413,
    // say): it is not waiting for the rest, so this connection is out of step; the
    // request side stops and the connection closes.
    else this.shutdown(undefined);
  }

  private release(ex: Exchange): void {
    this.detach(ex);
    if (!ex.reusable || this.closeWhenDone || this.isClosed) {
      this.shutdown(undefined, ex.reusable ? "end" : "reset");
      return;
    }
    this.ex = undefined;
    this.served++;
    this.resumeFor(undefined);
    this.owner.reusable(this);
  }

  private detach(ex: Exchange): void {
    if (ex.listening) {
      ex.signal!.removeEventListener("abort", ex);
      ex.listening = false;
    }
  }

  // ---- flow control for the response body ----

  pauseFor(ex: Exchange): void {
    if (this.ex !== ex || this.paused || this.isClosed) return;
    this.paused = true;
    this.socket?.pause();
  }

  /** `undefined` resumes whatever paused it (the connection is going idle). */
  resumeFor(ex: Exchange | undefined): void {
    if ((ex !== undefined && this.ex !== ex) || !this.paused || this.isClosed) return;
    this.paused = false;
    this.socket?.resume();
  }

  /** The consumer cancelled the body: the rest will never be read, so the connection cannot be reused. */
  abandon(ex: Exchange): void {
    if (this.ex === ex) this.shutdown(undefined);
  }

  abortExchange(ex: Exchange, reason: unknown): void {
    if (this.ex === ex) this.shutdown(abortError(reason, ex.wrote));
  }

  // ---- lifecycle ----

  private onHandshake(sock: Socket<H1Connection>, authError: Error | null): void {
    // A refusal after the connect: a renegotiation that failed the checks.
    const refused = this.dial!.handshake(sock, authError);
    if (refused && !this.isClosed) this.shutdown(refused);
  }

  /** Client connections set no idle timer: the pool retires idle ones. */
  onTimeout(): void {}

  onClose(err?: Error): void {
    if (this.dial?.pending) return this.dial.closed(err ?? this.lastError);
    if (err) this.lastError ??= err;
    this.shutdown(undefined, "peer");
  }

  private onError(err: Error): void {
    this.lastError ??= err;
    if (this.dial?.pending) return this.dial.errored(err);
    this.shutdown(undefined);
  }

  /**
   * Ends the connection and the exchange on it. `reason` is what the exchange failed
   * with; without one, the upstream closed (or the connection is just being retired).
   * `how`: the peer closed it; we reset it (RST: anything unread or unsent is void); or
   * we end it gracefully (a retired keep-alive connection).
   */
  protected shutdown(reason: Error | undefined, how: "peer" | "reset" | "end" = "reset"): void {
    if (this.isClosed) return;
    this.isClosed = true;
    const ex = this.ex;
    this.ex = undefined;
    if (ex !== undefined) {
      this.detach(ex);
      this.failExchange(ex, reason, how === "peer");
    }
    const waiter = this.drainWaiter;
    this.drainWaiter = undefined;
    this.out = undefined;
    this.held = undefined;
    this.head.reset();
    waiter?.(false);
    if (how === "reset") this.socket?.terminate();
    else if (how === "end") this.socket?.end();
    this.owner.closed(this);
  }

  private failExchange(ex: Exchange, reason: Error | undefined, byPeer: boolean): void {
    if (ex.phase === Phase.Done) return; // response complete; only the request side was still going
    // A body delimited by the close ends cleanly on a FIN, never on a reset or our own abort.
    if (ex.phase === Phase.Body && byPeer && reason === undefined && this.lastError === undefined && ex.closed()) return ex.sink.end();
    const err = reason ?? closeError(ex, this.lastError, `${this.opts.host}:${this.opts.port}`);
    // Only a connection that carried an earlier exchange can lose the keep-alive race (never once the head is in);
    // `served` counts the current exchange only once it is over.
    if (ex.phase === Phase.Head && this.served > 0 && isKeepAliveRace(err, ex.req.replayable)) this.owner.retryStale(ex.req, ex.body, ex.sink, ex.signal);
    else ex.sink.fail(err);
  }

  /** Socket callbacks, shared by every connection; `socket.data` is the connection. */
  static readonly handlers: SocketHandler<H1Connection> = {
    open: (s) => s.data.dial!.opened(s),
    handshake: (s, _ok, authError) => s.data.onHandshake(s, authError),
    data: (s, chunk) => readEvent(s.data, chunk),
    drain: (s) => s.data.onDrain(),
    close: (s, err) => {
      s.data.dial!.socketClosed();
      s.data.onClose(err);
    },
    error: (s, err) => s.data.onError(err),
    connectError: (s, err) => s.data.dial!.connectFailed(err),
  };
}

const HANDLERS = H1Connection.handlers;
