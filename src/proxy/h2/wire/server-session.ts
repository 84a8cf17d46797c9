/**
 * The server side of one HTTP/2 connection (RFC 9113) on a listener's own socket: the
 * client's preface, request streams handed to `stream` (server-stream.ts) once their
 * headers pass HTTP/2's rules (fields.ts), responses framed back (connection.ts).
 *
 * Beyond the frame layer's limits: the streams at once are held to
 * SETTINGS_MAX_CONCURRENT_STREAMS (REFUSED_STREAM past it), a header list past its limit
 * is answered 431 (trailers past it reset the stream), a body is held to its
 * content-length, and a client that ends most streams right after opening them is cut
 * off (rapid reset: ../../transport/mux/churn.ts), whether it reset them itself or had
 * this side reset them for a fault of its making (MadeYouReset, CVE-2025-8671).
 */
import type { ServerConnection } from "../../transport/h1-server/connection.ts";
import { ChurnGuard } from "../../transport/mux/churn.ts";
import { ConnectionError, H2Connection, STREAM_WINDOW } from "./connection.ts";
import { ErrorCode, PREFACE, Setting } from "./frames.ts";
import { requestHeaders, trailerProblem } from "./fields.ts";
import { H2ServerStream, type StreamSession } from "./server-stream.ts";
import type { WireStream } from "./wire-stream.ts";

export interface SessionLimits {
  /** SETTINGS_MAX_CONCURRENT_STREAMS: streams past it are refused (REFUSED_STREAM). */
  maxConcurrentStreams: number;
  /** Largest request header list (SETTINGS_MAX_HEADER_LIST_SIZE); past it a stream is answered 431. */
  maxHeaderListBytes: number;
  /** A session with no stream for this long is closed (GOAWAY). */
  idleSessionMs: number;
}

/** What a session reports: each new stream, and its own end. */
export interface SessionEvents {
  stream(stream: H2ServerStream): void;
  /** The stream was refused before a handler saw it (a malformed or over-large request): a label for metrics. */
  refused(reason: string): void;
  closed(session: H2ServerSession): void;
}

export class H2ServerSession extends H2Connection implements StreamSession {
  private readonly streams = new Map<number, H2ServerStream>();
  private lastId = 0;
  private prefaceRead = false;
  private readonly churn = new ChurnGuard();
  /** GOAWAY sent or received: no stream past lastId is taken, and the connection ends when the last one does. */
  private goingAway = false;
  /** One timer for the session's life: streams opening and closing only move `idleSince`. */
  private idleTimer: Timer | undefined;
  /** performance.now() when the last stream closed (or the session opened). */
  private idleSince = performance.now();
  protected readonly maxHeaderListBytes: number;

  constructor(
    private readonly conn: ServerConnection,
    private readonly limits: SessionLimits,
    private readonly events: SessionEvents,
  ) {
    super();
    this.maxHeaderListBytes = limits.maxHeaderListBytes;
    conn.tunnel = (chunk) => this.onData(chunk as Buffer);
    conn.onTunnelDrain = () => this.socketDrained();
    conn.onTunnelClose = () => this.connectionGone();
    conn.onTunnelRetire = () => this.retire();
    this.start([
      [Setting.MAX_CONCURRENT_STREAMS, limits.maxConcurrentStreams],
      [Setting.MAX_HEADER_LIST_SIZE, limits.maxHeaderListBytes],
      [Setting.ENABLE_PUSH, 0],
    ]);
    this.armIdle(limits.idleSessionMs);
  }

  get streamCount(): number {
    return this.streams.size;
  }

  // ---- the frame layer's questions ----

  protected override readPreface(buf: Buffer): number {
    if (this.prefaceRead) return 0;
    if (buf.byteLength < PREFACE.byteLength) return -1;
    if (buf.compare(PREFACE, 0, PREFACE.byteLength, 0, PREFACE.byteLength) !== 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "not the HTTP/2 connection preface");
    this.prefaceRead = true;
    return PREFACE.byteLength;
  }

  protected streamOf(id: number): WireStream | undefined {
    return this.streams.get(id);
  }

  protected isIdle(id: number): boolean {
    return id > this.lastId;
  }

  protected eachStream(visit: (stream: WireStream) => void): void {
    for (const stream of this.streams.values()) visit(stream);
  }

  protected get lastStreamId(): number {
    return this.lastId;
  }

  protected settingsApplied(): void {}

  protected writeOut(buf: Buffer, length: number): boolean {
    return this.conn.write(buf, 0, length);
  }

  protected streamData(stream: WireStream, buf: Buffer, from: number, to: number, endStream: boolean): void {
    const s = stream as H2ServerStream;
    if (s.expectedLength >= 0 && s.received + (to - from) > s.expectedLength) return this.malformed(s);
    if (to > from) s.onData(buf.subarray(from, to));
    if (!endStream) return;
    if (s.expectedLength >= 0 && s.received !== s.expectedLength) return this.malformed(s);
    s.onEnd();
  }

  /** A new stream's request, or a stream's trailers. */
  protected headerBlock(id: number, fields: string[], endStream: boolean): void {
    if (id <= this.lastId) return this.trailersOf(id, fields, endStream);
    if ((id & 1) === 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, `a client stream with even id ${id}`);
    this.lastId = id;
    // After GOAWAY, new streams are ignored (RFC 9113 §6.8); past the limit, refused unprocessed.
    if (this.goingAway) return;
    if (this.streams.size >= this.limits.maxConcurrentStreams) {
      this.events.refused("streams");
      return this.sendRst(id, ErrorCode.REFUSED_STREAM);
    }
    if (this.decoder.listBytes > this.limits.maxHeaderListBytes) {
      this.events.refused("too-large");
      return this.answerTooLarge(id, endStream);
    }
    const headers = requestHeaders(fields);
    if (typeof headers === "string") {
      this.events.refused("malformed");
      this.sendRst(id, ErrorCode.PROTOCOL_ERROR);
      this.churn.streamOpened();
      return this.endedBusy(performance.now());
    }
    const stream = new H2ServerStream(this, id, headers, this.conn.peer, STREAM_WINDOW, this.initialSendWindow);
    this.streams.set(id, stream);
    this.churn.streamOpened();
    if (endStream) {
      if (stream.expectedLength > 0) return this.malformed(stream);
      stream.onEnd();
    }
    this.events.stream(stream);
  }

  private trailersOf(id: number, fields: string[], endStream: boolean): void {
    const stream = this.streams.get(id);
    if (stream === undefined) return;
    if (this.decoder.listBytes > this.limits.maxHeaderListBytes) return this.malformed(stream);
    if (stream.remoteEnded) return this.streamError(id, ErrorCode.STREAM_CLOSED);
    if (!endStream || trailerProblem(fields) !== undefined) return this.malformed(stream);
    if (stream.expectedLength >= 0 && stream.received !== stream.expectedLength) return this.malformed(stream);
    // Request trailers are not relayed (no HTTP/1.1 service reads them, and gRPC sends none): the body ends.
    stream.onEnd();
  }

  protected streamReset(id: number): void {
    const stream = this.streams.get(id);
    if (stream === undefined) return;
    const busy = !stream.responseEnded;
    stream.onGone();
    if (busy) this.endedBusy(stream.openedAt);
  }

  /** A stream opened at `openedAt` ended with its request in flight: past the rapid-reset rule, the session ends gracefully, other callers' calls on it finishing. */
  private endedBusy(openedAt: number): void {
    if (this.churn.endedBusy(performance.now() - openedAt)) this.retire();
  }

  protected goawayReceived(): void {
    // The client opens no more streams; those open finish.
    this.goingAway = true;
    this.endIfDone();
  }

  protected streamError(id: number, code: ErrorCode): void {
    this.sendRst(id, code);
    const stream = this.streams.get(id);
    if (stream === undefined) return;
    const busy = !stream.responseEnded;
    stream.onGone();
    if (busy) this.endedBusy(stream.openedAt);
  }

  // ---- streams' requests (StreamSession) ----

  closed(stream: H2ServerStream): void {
    this.streams.delete(stream.id);
    this.forget(stream);
    if (this.streams.size > 0) return;
    this.idleSince = performance.now();
    this.endIfDone();
  }

  /** A malformed request (RFC 9113 §8.1.1): its stream is reset with PROTOCOL_ERROR. */
  private malformed(stream: H2ServerStream): void {
    this.events.refused("malformed");
    this.streamError(stream.id, ErrorCode.PROTOCOL_ERROR);
  }

  /** A request head past the limit gets 431, as an HTTP/1.1 one does (RFC 9113 §10.5.1). */
  private answerTooLarge(id: number, endStream: boolean): void {
    this.sendHeaders(id, [":status", "431", "content-length", "0"], true);
    if (!endStream) this.sendRst(id, ErrorCode.NO_ERROR);
  }

  // ---- the session's end ----

  /** GOAWAY: streams open finish, no new ones start, and the connection ends after the last. */
  retire(): void {
    if (this.over) return;
    if (!this.goingAway) this.goaway(this.lastId, ErrorCode.NO_ERROR);
    this.goingAway = true;
    this.endIfDone();
  }

  /** Ends now: open streams are reset, so none reads as complete. */
  stop(): void {
    if (this.over) return;
    for (const stream of [...this.streams.values()]) stream.reset(ErrorCode.CANCEL);
    this.fail(ErrorCode.NO_ERROR, "the sidecar stopped");
  }

  private endIfDone(): void {
    if (this.goingAway && this.streams.size === 0 && !this.over) this.end();
  }

  protected streamsGone(): void {
    for (const stream of [...this.streams.values()]) stream.onGone();
  }

  protected closeTransport(reset: boolean): void {
    clearTimeout(this.idleTimer);
    if (reset) this.conn.shutdown(true);
    else this.conn.endTunnel();
    this.events.closed(this);
  }

  private connectionGone(): void {
    if (this.over) return;
    this.over = true;
    clearTimeout(this.idleTimer);
    this.streamsGone();
    this.events.closed(this);
  }

  /** A session with no stream for the idle time is retired; otherwise the timer looks again when that time could next be up. */
  private armIdle(ms: number): void {
    this.idleTimer = setTimeout(() => {
      const idleFor = performance.now() - this.idleSince;
      if (this.streams.size === 0 && idleFor >= this.limits.idleSessionMs) return this.retire();
      this.armIdle(this.streams.size === 0 ? this.limits.idleSessionMs - idleFor : this.limits.idleSessionMs);
    }, ms);
  }
}
