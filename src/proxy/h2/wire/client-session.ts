/**
 * The client side of one HTTP/2 connection (RFC 9113) to an upstream: dialled plain (h2c
 * with prior knowledge, to the local service) or with mutual TLS, ALPN "h2" and the peer's
 * SPIFFE ID checked in the handshake (../../transport/dial.ts), before any stream is sent.
 *
 * Streams wait until the peer's SETTINGS arrived and then open within its
 * SETTINGS_MAX_CONCURRENT_STREAMS, the rest queued here: a burst on a new session is
 * never refused for want of knowing the limit. A stream fails with how far it got
 * (client-stream.ts): never sent (the dial failed, no SETTINGS within the connect
 * timeout), refused unprocessed (REFUSED_STREAM, or past the peer's GOAWAY), or reset.
 * A session many of whose streams were cancelled is retired, since the peer counts
 * resets per connection against rapid reset and one session carries many callers' calls.
 */
import type { Socket, SocketHandler } from "bun";
import { PeerIdentityError } from "../../errors.ts";
import { readEvent } from "../../../core/clock.ts";
import { Dial, type DialTls } from "../../transport/dial.ts";
import { alpnWire } from "../../transport/mux/frame.ts";
import { writeQueued } from "../../transport/write-queue.ts";
import { ConnectionError, H2Connection, STREAM_WINDOW } from "./connection.ts";
import { ErrorCode, PREFACE, Setting } from "./frames.ts";
import { declaredLength, responseHeaders, trailerHeaders } from "./fields.ts";
import { H2ClientStream, type ClientStreamSession, type UpstreamFailure, type UpstreamHandler } from "./client-stream.ts";
import type { WireStream } from "./wire-stream.ts";

export interface ClientSessionOptions {
  host: string;
  port: number;
  /** Undefined: h2c with prior knowledge. */
  tls?: Omit<DialTls, "alpn">;
  /** From dialling until the peer's SETTINGS arrived (handshakes included). */
  connectTimeoutMs: number;
  /** A session with no stream this long is closed. */
  idleTimeoutMs: number;
}

export interface ClientSessionEvents {
  /** The session takes no new streams (GOAWAY, retired) or is closed: its owner forgets it. */
  unusable(session: H2ClientSession): void;
}

const ALPN_H2 = alpnWire(["h2"]);
/** Largest response header list taken (SETTINGS_MAX_HEADER_LIST_SIZE), as the listeners take for requests. */
const MAX_HEADER_LIST_BYTES = 64 * 1024;
/** The peer's stream limit until its SETTINGS say: the least RFC 9113 §6.5.2 recommends, and what Envoy and Go's server default to. */
const ASSUMED_MAX_STREAMS = 100;
/** Informational (1xx) heads taken before a response: past them, the stream is malformed (a peer could send them for ever). */
const MAX_INFORMATIONAL_HEADS = 8;
/** The last stream id a client may open (RFC 9113 §5.1.1): past it, a new session. */
const LAST_STREAM_ID = 0x7fff_ffff;
/** Streams cancelled before a session is retired (see the header). */
const CANCELS_PER_SESSION = 100;

export class H2ClientSession extends H2Connection implements ClientStreamSession {
  private socket: Socket<H2ClientSession> | undefined;
  private readonly dial: Dial<H2ClientSession>;
  private readonly streams = new Map<number, H2ClientStream>();
  /** Streams asked for and not yet opened: until SETTINGS, or past the peer's limit. */
  private waiting: H2ClientStream[] = [];
  private nextId = 1;
  /** Takes no new streams: GOAWAY from the peer, or retired. */
  private draining = false;
  /** Opens none of the streams waiting either: the peer said GOAWAY, or the connection failed. */
  private stopped = false;
  /** The dial succeeded (TLS handshake and peer check passed): a stream sent may have reached the peer. */
  connected = false;
  private readonly toSocket: Uint8Array[] = [];
  private settleTimer: Timer | undefined;
  /** One timer for the session's life: streams opening and closing only move `idleSince`. */
  private idleTimer: Timer | undefined;
  /** performance.now() when the last stream closed (or the session connected). */
  private idleSince = 0;
  private cancels = 0;
  protected readonly maxHeaderListBytes = MAX_HEADER_LIST_BYTES;

  constructor(
    private readonly opts: ClientSessionOptions,
    private readonly events: ClientSessionEvents,
  ) {
    super();
    const tls = opts.tls === undefined ? undefined : { ...opts.tls, alpn: ALPN_H2 };
    this.dial = new Dial<H2ClientSession>({ host: opts.host, port: opts.port, tls, connectTimeoutMs: opts.connectTimeoutMs }, { ready: (s) => this.ready(s), fail: (err) => this.dialFailed(err) });
    this.dial.start(this, HANDLERS);
    this.settleTimer = setTimeout(() => this.neverSettled(), opts.connectTimeoutMs);
  }

  /** New streams may be asked of it. */
  get usable(): boolean {
    return !this.draining && !this.stopped && !this.over;
  }

  /** Streams open or waiting. */
  get load(): number {
    return this.streams.size + this.waiting.length;
  }

  /** Whether a new stream would open at once (once settled): below the peer's stream limit, taken as 100 until it says. */
  get hasRoom(): boolean {
    return this.load < (this.settled ? this.peerMaxStreams : ASSUMED_MAX_STREAMS);
  }

  /** Sends a request (its head now, or once the session can); `endStream`: it has no body. The handler hears of it from the next turn on. */
  request(fields: string[], endStream: boolean, handler: UpstreamHandler): H2ClientStream {
    const stream = new H2ClientStream(this, fields, handler);
    if (endStream) stream.endQueued = true;
    if (!this.usable) {
      queueMicrotask(() => stream.onFailed({ kind: "not-taken", code: 0, message: "the session to the peer was closing" }));
      return stream;
    }
    this.waiting.push(stream);
    this.openWaiting();
    return stream;
  }

  /** Opens waiting streams while the peer's limit allows. */
  private openWaiting(): void {
    while (this.settled && this.waiting.length > 0 && this.streams.size < this.peerMaxStreams && !this.over && !this.stopped) {
      if (this.nextId > LAST_STREAM_ID) {
        // Stream ids are never reused: what waits goes on a new session, this one ends with its streams.
        this.stopTaking();
        return this.failWaiting({ kind: "not-taken", code: 0, message: "the session to the peer used up its stream ids" });
      }
      const stream = this.waiting.shift()!;
      if (stream.closed) continue;
      const id = this.nextId;
      this.nextId += 2;
      // The last id: new calls go to a new session from now on.
      if (this.nextId > LAST_STREAM_ID) this.stopTaking();
      stream.open(id, STREAM_WINDOW, this.initialSendWindow);
      this.streams.set(id, stream);
      const headersOnly = stream.endQueued && stream.queued.length === 0;
      this.sendHeaders(id, stream.fields, headersOnly);
      if (headersOnly) stream.sendDone();
      else if (this.flushStream(stream)) stream.onDrain();
    }
  }

  // ---- the connection ----

  private ready(socket: Socket<H2ClientSession>): void {
    // Ended while it dialled (no SETTINGS in time, or destroyed): the late connection goes too.
    if (this.over) return void socket.terminate();
    if (this.opts.tls !== undefined && socket.alpnProtocol !== "h2") {
      socket.end();
      return this.dialFailed(new Error(`${this.opts.host}:${this.opts.port} did not choose h2 in ALPN (it chose ${socket.alpnProtocol || "nothing"})`));
    }
    this.socket = socket;
    this.connected = true;
    this.idleSince = performance.now();
    this.armIdle(this.opts.idleTimeoutMs);
    socket.write(PREFACE);
    this.start([
      [Setting.ENABLE_PUSH, 0],
      [Setting.MAX_HEADER_LIST_SIZE, MAX_HEADER_LIST_BYTES],
    ]);
    // Retired while it dialled, with nothing to carry.
    this.endIfDone();
  }

  private dialFailed(err: Error): void {
    clearTimeout(this.settleTimer);
    if (this.over) return;
    this.over = true;
    const kind = err instanceof PeerIdentityError ? "peer-identity" : "connect-failure";
    this.failWaiting({ kind, code: 0, message: err.message });
    this.events.unusable(this);
  }

  /** No SETTINGS within the connect timeout: nothing was sent, and the session is ended. */
  private neverSettled(): void {
    if (this.settled || this.over) return;
    this.failWaiting({ kind: "connect-failure", code: 0, message: `no HTTP/2 settings from ${this.opts.host}:${this.opts.port} within ${this.opts.connectTimeoutMs} ms` });
    this.destroy();
  }

  private failWaiting(failure: UpstreamFailure): void {
    const waiting = this.waiting;
    this.waiting = [];
    for (const stream of waiting) stream.onFailed(failure);
  }

  protected settingsApplied(): void {
    clearTimeout(this.settleTimer);
    this.openWaiting();
  }

  protected writeOut(buf: Buffer, length: number): boolean {
    const socket = this.socket;
    if (socket === undefined) return true;
    if (this.toSocket.length > 0) {
      this.toSocket.push(Buffer.from(buf.subarray(0, length)));
      return false;
    }
    const n = socket.write(buf, 0, length);
    // All taken, or the socket closed (its close event ends the session).
    if (n === length || n < 0) return true;
    this.toSocket.push(Buffer.from(buf.subarray(n, length)));
    return false;
  }

  private onSocketDrain(): void {
    if (writeQueued(this.socket!, this.toSocket)) this.socketDrained();
  }

  // ---- the frame layer's questions ----

  protected streamOf(id: number): WireStream | undefined {
    return this.streams.get(id);
  }

  /** Streams are opened by this side alone (odd ids; no server push): any other id is idle. */
  protected isIdle(id: number): boolean {
    return (id & 1) === 0 || id >= this.nextId;
  }

  protected eachStream(visit: (stream: WireStream) => void): void {
    for (const stream of this.streams.values()) visit(stream);
  }

  protected get lastStreamId(): number {
    return 0;
  }

  protected headerBlock(id: number, fields: string[], endStream: boolean): void {
    if (this.isIdle(id)) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, `HEADERS on stream ${id}, which this side never opened`);
    const stream = this.streams.get(id);
    if (stream === undefined) return;
    if (stream.remoteEnded) return this.streamError(id, ErrorCode.STREAM_CLOSED);
    if (this.decoder.listBytes > MAX_HEADER_LIST_BYTES) return this.malformed(stream, `a response head over ${MAX_HEADER_LIST_BYTES} bytes`);
    if (stream.answered) {
      const trailers = endStream ? trailerHeaders(fields) : "trailers without END_STREAM";
      if (typeof trailers === "string") return this.malformed(stream, trailers);
      if (stream.expectedLength >= 0 && stream.received !== stream.expectedLength) return this.malformed(stream, "a body shorter than its content-length");
      stream.onTrailers(trailers);
      return stream.onEnd();
    }
    const head = responseHeaders(fields);
    if (typeof head === "string") return this.malformed(stream, head);
    const status = head[":status"] as string;
    // 1xx (100 Continue, 103 Early Hints) come before the response, a few at most; 101 does not exist in HTTP/2.
    if (status.charCodeAt(0) === 0x31) {
      if (status === "101" || endStream || ++stream.informational > MAX_INFORMATIONAL_HEADS) return this.malformed(stream, `a ${status} response, or too many`);
      return;
    }
    // A body is held to its content-length (RFC 9113 §8.1.1); HEAD, 204 and 304 have none, whatever it says (RFC 9110 §6.4.1).
    if (stream.headRequest || status === "204" || status === "304") stream.expectedLength = 0;
    else {
      const length = declaredLength(head["content-length"]);
      if (length === undefined) return this.malformed(stream, "a content-length that is not one number");
      stream.expectedLength = length;
    }
    if (endStream && stream.expectedLength > 0) return this.malformed(stream, "no body, and a content-length");
    stream.onHead(head, endStream);
  }

  protected streamData(stream: WireStream, buf: Buffer, from: number, to: number, endStream: boolean): void {
    const s = stream as H2ClientStream;
    if (!s.answered) return this.malformed(s, "DATA before the response head");
    s.received += to - from;
    if (s.expectedLength >= 0 && (s.received > s.expectedLength || (endStream && s.received !== s.expectedLength))) return this.malformed(s, "a body unlike its content-length");
    if (to > from) s.onData(buf.subarray(from, to));
    if (endStream) s.onEnd();
  }

  protected streamReset(id: number, code: number): void {
    const refused = code === ErrorCode.REFUSED_STREAM;
    this.streams.get(id)?.onFailed({ kind: refused ? "refused-stream" : "reset", code, message: refused ? "the stream was refused unprocessed" : `the stream was reset (code ${code})` });
  }

  protected streamError(id: number, code: ErrorCode): void {
    this.sendRst(id, code);
    this.streams.get(id)?.onFailed({ kind: "reset", code, message: `the stream broke HTTP/2's rules (code ${code})` });
  }

  private malformed(stream: H2ClientStream, why: string): void {
    this.sendRst(stream.id, ErrorCode.PROTOCOL_ERROR);
    stream.onFailed({ kind: "reset", code: ErrorCode.PROTOCOL_ERROR, message: `a malformed response: ${why}` });
  }

  /** The peer takes no stream past `lastStreamId`: those were never processed, and may go elsewhere. */
  protected goawayReceived(lastStreamId: number, code: number): void {
    this.stopTaking();
    // No stream opens after it (RFC 9113 §6.8): those waiting go elsewhere.
    this.stopped = true;
    const failure: UpstreamFailure = { kind: "not-taken", code, message: `the peer is going away (GOAWAY code ${code}) and did not take the stream` };
    this.failWaiting(failure);
    for (const stream of [...this.streams.values()]) if (stream.id > lastStreamId) stream.onFailed(failure);
    this.endIfDone();
  }

  // ---- streams (ClientStreamSession) ----

  streamClosed(stream: H2ClientStream): void {
    if (!stream.opened) {
      // Cancelled while it waited: let go of it (and of the call it would report to).
      const at = this.waiting.indexOf(stream);
      if (at >= 0) this.waiting.splice(at, 1);
      return;
    }
    this.streams.delete(stream.id);
    this.forget(stream);
    this.openWaiting();
    if (this.load > 0) return;
    this.idleSince = performance.now();
    this.endIfDone();
  }

  /** A session with no stream for the idle time is retired; otherwise the timer looks again when that time could next be up. */
  private armIdle(ms: number): void {
    this.idleTimer = setTimeout(() => {
      const idleFor = performance.now() - this.idleSince;
      if (this.load === 0 && idleFor >= this.opts.idleTimeoutMs) return this.retire();
      this.armIdle(this.load === 0 ? this.opts.idleTimeoutMs - idleFor : this.opts.idleTimeoutMs);
    }, ms);
  }

  cancelled(): void {
    if (++this.cancels === CANCELS_PER_SESSION) this.retire();
  }

  // ---- the session's end ----

  private stopTaking(): void {
    if (this.draining) return;
    this.draining = true;
    this.events.unusable(this);
  }

  /** Takes no new streams; those open or waiting finish, then the connection closes. */
  retire(): void {
    this.stopTaking();
    this.endIfDone();
  }

  private endIfDone(): void {
    if (!this.draining || this.load > 0 || this.over || this.socket === undefined) return;
    this.goaway(0, ErrorCode.NO_ERROR);
    this.end();
  }

  /** Ends now: every stream open or waiting fails. */
  destroy(): void {
    if (this.over) return;
    this.stopTaking();
    this.over = true;
    this.streamsGone();
    this.closeTransport(true);
  }

  protected streamsGone(): void {
    this.stopTaking();
    this.stopped = true;
    this.failWaiting({ kind: "connect-failure", code: 0, message: "the connection to the peer failed before the stream was sent" });
    for (const stream of [...this.streams.values()]) stream.onFailed({ kind: "reset", code: 0, message: "the connection to the peer failed" });
  }

  protected closeTransport(reset: boolean): void {
    clearTimeout(this.settleTimer);
    clearTimeout(this.idleTimer);
    this.stopTaking();
    if (this.socket === undefined) return this.dial.socketClosed();
    if (reset) this.socket.terminate();
    else this.socket.end();
  }

  /** The socket closed. */
  private gone(err: Error | undefined): void {
    this.dial.socketClosed();
    if (!this.connected) return this.dial.closed(err);
    if (this.over) return;
    this.over = true;
    clearTimeout(this.idleTimer);
    this.stopTaking();
    this.streamsGone();
  }

  static readonly handlers: SocketHandler<H2ClientSession> = {
    open: (s) => s.data.dial.opened(s),
    handshake: (s, _ok, authError) => {
      // A refusal after the connect: a renegotiation that failed the checks.
      if (s.data.dial.handshake(s, authError) !== undefined) s.terminate();
    },
    data: (s, chunk) => readEvent(s.data, chunk),
    drain: (s) => s.data.onSocketDrain(),
    close: (s, err) => s.data.gone(err),
    error: (s, err) => {
      if (!s.data.connected) s.data.dial.errored(err);
    },
    connectError: (s, err) => s.data.dial.connectFailed(err),
  };
}

const HANDLERS = H2ClientSession.handlers;
