/**
 * A mesh-mux/1 session (frame.ts) on one TLS socket, in either role: the client opens
 * streams, the server accepts them. Reads are cut into frames by its base class
 * (frame-reader.ts); this holds the peer to the protocol. Frames written by any stream
 * during one turn of the event loop go out together (frame-writer.ts): when a proxy handles
 * several requests per wakeup, they cross the pair in one TLS record.
 *
 * What a peer can make us hold is bounded: at most MAX_STREAMS streams, each at most
 * STREAM_WINDOW bytes unread (held by a paused stream in one buffer of its own) and a 16 KiB
 * slab of its small pieces, frames at most MAX_FRAME_PAYLOAD, and only a frame header is
 * ever buffered across reads (payloads are handed on as they arrive). Anything outside the
 * protocol tears the session down.
 */
import {
  DATA,
  FIN,
  GOAWAY,
  MAX_FRAME_PAYLOAD,
  MAX_STREAMS,
  MAX_WINDOW,
  MuxProtocolError,
  RESET,
  RESET_CANCEL,
  RESET_REFUSED,
  StreamRefusedError,
  WINDOW,
} from "./frame.ts";
import { ChurnGuard } from "./churn.ts";
import { FrameReader } from "./frame-reader.ts";
import { FrameWriter, type SessionSocket } from "./frame-writer.ts";
import { MuxStream, type StreamHandler } from "./stream.ts";

export interface SessionEvents {
  /** Server role: the handler of a stream the peer opened, or undefined to refuse it. */
  accept?(stream: MuxStream): StreamHandler | undefined;
  /** A stream ended, by either side. */
  streamClosed?(session: MuxSession): void;
  /** The session is gone (once). */
  closed(session: MuxSession): void;
}

/** Output bytes above which streams wait for the socket (their write returns short). */
const HIGH_WATER = 256 * 1024;
/**
 * Control frames (WINDOW, FIN, RESET) are queued whatever the room, and a peer can cause
 * them (a RESET for every stream it opens past the limit) without reading: past this,
 * it is not a peer that reads what it asks for, and the session ends.
 */
const OUTPUT_LIMIT = HIGH_WATER + 1024 * 1024;
const LAST_STREAM_ID = 0xffff_ffff;
const RAPID_RESET = "most streams were ended with their request in flight right after they opened (rapid reset)";

export class MuxSession extends FrameReader {
  readonly streams = new Map<number, MuxStream>();
  /** GOAWAY was sent (server) or heard (client): the client opens no more streams here. */
  draining = false;
  /** Server role: new streams are refused, and the session ends once its streams have. */
  private refusing = false;
  override closed = false;
  /**
   * The idle timer's period, in seconds (see onTimeout): server role, the listener's idle
   * time; client role, how long a closing session may take to send its last bytes.
   */
  idleTimeoutS = 0;
  /** `events.closed` was called. */
  private gone = false;
  private nextId = 1;
  /** Server role: the highest stream id a peer used, and the highest one accepted (GOAWAY names it). */
  private highestSeen = 0;
  private lastAccepted = 0;
  private readonly churn = new ChurnGuard();

  private readonly writer: FrameWriter;
  private endWhenFlushed = false;
  private drainWaiters: MuxStream[] = [];

  constructor(
    private readonly socket: SessionSocket,
    readonly role: "client" | "server",
    private readonly events: SessionEvents,
  ) {
    super();
    this.writer = new FrameWriter(socket, () => this.flushed());
    // A new session has a whole period to open its first stream: Bun fires the timer first anywhere from half a second to a few seconds after it is armed.
    this.stirred = true;
  }

  /** Client role: a new stream, usable at once (the server learns of it from its first bytes). */
  openStream(handler: StreamHandler): MuxStream {
    const stream = new MuxStream(this, this.nextId++);
    stream.handler = handler;
    this.streams.set(stream.id, stream);
    if (this.nextId >= LAST_STREAM_ID) this.draining = true;
    return stream;
  }

  /** Client role: whether another stream may be opened here. */
  get hasRoom(): boolean {
    return !this.draining && !this.closed && this.streams.size < MAX_STREAMS;
  }

  // ---- reading (frames cut from reads by FrameReader.onData) ----

  protected override onFrame(type: number, flags: number, id: number, value: number): void {
    if (flags !== 0) return this.fail(`frame flags ${flags} on stream ${id}`);
    if (id === 0 && type !== GOAWAY) return this.fail(`frame type ${type} on stream 0`);
    // Only frames of live streams count as activity: a peer's noise (a WINDOW on a closed
    // stream every period) must not keep a session without streams open for good.
    if (this.streams.has(id)) this.stirred = true;
    switch (type) {
      case DATA:
        return this.onDataFrame(id, value);
      case WINDOW: {
        const stream = this.streams.get(id);
        if (stream === undefined) return;
        if (value === 0 || stream.sendWindow + value > MAX_WINDOW) return this.fail(`WINDOW of ${value} on stream ${id} with ${stream.sendWindow} open`);
        stream.sendWindow += value;
        if (stream.wantsDrain && this.room() > 0) {
          stream.wantsDrain = false;
          stream.handler?.onDrain();
        }
        return;
      }
      case FIN:
      case RESET: {
        const stream = this.streams.get(id);
        if (stream === undefined || stream.finHeld) return;
        if (this.role === "server" && stream.handler?.idle === false && this.churn.endedBusy(performance.now() - stream.openedAt)) return this.fail(RAPID_RESET);
        const err =
          type === FIN ? undefined : value === RESET_REFUSED ? new StreamRefusedError(`the peer refused stream ${id}`) : new Error(`the peer reset stream ${id}`);
        if (stream.closedByPeer(err)) this.forget(stream);
        return;
      }
      case GOAWAY:
        if (this.role !== "client" || id !== 0) return this.fail("GOAWAY sent by a client or on a stream");
        // Streams already open finish; idle ones read as closed to the pool (MuxStream.readyState).
        this.draining = true;
        return;
      default:
        return this.fail(`unknown frame type ${type}`);
    }
  }

  private onDataFrame(id: number, length: number): void {
    if (length === 0 || length > MAX_FRAME_PAYLOAD) return this.fail(`DATA frame of ${length} bytes on stream ${id}`);
    let stream = this.streams.get(id);
    // A closed stream's bytes still in flight are read and dropped.
    if (stream === undefined && this.role === "server" && id > this.highestSeen) stream = this.accept(id);
    if (stream !== undefined) {
      if (stream.finHeld) return this.fail(`DATA after FIN on stream ${id}`);
      if (length > stream.recvWindow) return this.fail(`stream ${id} sent ${length} bytes with ${stream.recvWindow} of window left`);
      stream.recvWindow -= length;
    }
    this.dataFor = stream;
    this.dataLeft = length;
  }

  private accept(id: number): MuxStream | undefined {
    // Ids only grow: one refused here is never opened later.
    this.highestSeen = id;
    const stream = new MuxStream(this, id);
    const handler = this.refusing || this.endWhenFlushed || this.streams.size >= MAX_STREAMS ? undefined : this.events.accept?.(stream);
    if (handler === undefined) {
      this.frame(RESET, id, RESET_REFUSED);
      return undefined;
    }
    this.lastAccepted = id;
    this.stirred = true;
    stream.handler = handler;
    stream.openedAt = performance.now();
    this.churn.streamOpened();
    this.streams.set(id, stream);
    return stream;
  }

  // ---- writing ----

  /** A stream's write: what fits its window and the output's room goes out; the count taken. */
  send(stream: MuxStream, data: string | Uint8Array, offset: number, length: number): number {
    if (this.closed) return -1;
    const n = Math.max(0, Math.min(length, stream.sendWindow, this.room()));
    if (n < length && !stream.wantsDrain) {
      stream.wantsDrain = true;
      this.drainWaiters.push(stream);
    }
    if (n === 0) return 0;
    stream.sendWindow -= n;
    this.writer.data(stream.id, data, offset, n);
    return n;
  }

  /** The stream closed on our side: FIN after what it wrote, or RESET. */
  finish(stream: MuxStream, reset: boolean): void {
    if (this.streams.get(stream.id) !== stream) return;
    this.streams.delete(stream.id);
    if (!this.closed) this.frame(reset ? RESET : FIN, stream.id, reset ? RESET_CANCEL : 0);
    this.streamGone();
  }

  /**
   * Server role: a stream's request was refused for breaking HTTP (a malformed body, say),
   * which ends the stream with the service's work cancelled, as the peer's own RESET would:
   * counted alike, or a peer could churn the service's requests that way unchecked (HTTP/2's
   * "MadeYouReset"). The session ends after the refusal is queued, not inside it.
   */
  refusedBusy(stream: MuxStream): void {
    if (this.role === "server" && this.churn.endedBusy(performance.now() - stream.openedAt)) queueMicrotask(() => this.fail(RAPID_RESET));
  }

  /** The peer's end of a stream was passed on: it no longer counts. */
  forget(stream: MuxStream): void {
    if (this.streams.get(stream.id) !== stream) return;
    this.streams.delete(stream.id);
    this.streamGone();
  }

  private streamGone(): void {
    if (this.refusing && this.streams.size === 0) this.close();
    this.events.streamClosed?.(this);
  }

  /** Credits the peer with bytes a stream handed on. */
  credit(stream: MuxStream, bytes: number): void {
    if (this.closed || this.streams.get(stream.id) !== stream) return;
    stream.recvWindow += bytes;
    this.frame(WINDOW, stream.id, bytes);
  }

  private room(): number {
    return HIGH_WATER - this.writer.queued;
  }

  private frame(type: number, id: number, value: number): void {
    if (this.writer.queued > OUTPUT_LIMIT) return this.fail("the peer does not read what it is sent");
    this.writer.control(type, id, value);
  }

  onDrain(): void {
    this.writer.onDrain();
  }

  /** All output went out. */
  private flushed(): void {
    if (this.endWhenFlushed) {
      this.closed = true;
      this.writer.stopped = true;
      this.socket.end();
      return;
    }
    this.wakeWriters();
  }

  private wakeWriters(): void {
    if (this.drainWaiters.length === 0) return;
    const waiting = this.drainWaiters;
    this.drainWaiters = [];
    for (const stream of waiting) {
      if (!stream.open || !stream.wantsDrain) continue;
      // Still out of window: the peer's WINDOW wakes it.
      if (stream.sendWindow === 0) {
        this.drainWaiters.push(stream);
        continue;
      }
      stream.wantsDrain = false;
      stream.handler?.onDrain();
    }
  }

  // ---- lifecycle ----

  /**
   * Server role, first step of a graceful end: tells the client to open no more streams.
   * Streams it opened before it heard are still taken until refuseStreams(), as in
   * HTTP/2's graceful shutdown (RFC 9113, 6.8): a refused stream's request body is gone.
   */
  goAway(): void {
    if (this.draining || this.closed) return;
    this.draining = true;
    this.frame(GOAWAY, 0, this.lastAccepted);
  }

  /** Server role, second step: new streams are refused; the session ends once its streams have. */
  refuseStreams(): void {
    this.goAway();
    this.refusing = true;
    if (this.streams.size === 0) this.close();
  }

  /**
   * Ends the session gracefully once what is queued went out. A client session arms its
   * timer here (a server's is always armed): a server that reads nothing would otherwise
   * hold the connection for good.
   */
  close(): void {
    if (this.closed) return;
    this.draining = true;
    this.endWhenFlushed = true;
    if (this.role === "client" && this.idleTimeoutS > 0) this.socket.timeout(this.idleTimeoutS);
    this.writer.schedule();
  }

  /**
   * Fires every idleTimeoutS (Bun does not re-arm the timer on a read); a client session's
   * only once it is closing. A closing session whose last bytes have not gone out a period
   * later is dropped: a peer that reads nothing would hold it open (and, on a server, its
   * place among the listener's connections) for good. On a server, each stream judges its
   * own period (ServerConnection.onTimeout), and the session closes once it has had no
   * stream and read nothing of one for a whole period.
   */
  onTimeout(): void {
    if (this.endWhenFlushed) return this.destroy(new Error("the peer took nothing of the mux session's last bytes for a whole period"));
    if (this.role === "client") return;
    const stirred = this.stirred;
    this.stirred = false;
    for (const stream of [...this.streams.values()]) stream.handler?.onTimeout();
    if (this.streams.size === 0 && !stirred) this.close();
    if (!this.closed) this.socket.timeout(this.idleTimeoutS);
  }

  /** Drops the session and every stream on it now. */
  destroy(err: Error): void {
    if (this.gone) return;
    this.closed = true;
    this.socket.terminate();
    this.ended(err);
  }

  /** The socket closed. */
  onClose(err: Error | undefined): void {
    this.closed = true;
    this.ended(err ?? new Error("the mux session's connection closed"));
  }

  private ended(err: Error): void {
    if (this.gone) return;
    this.gone = true;
    this.writer.stopped = true;
    const streams = [...this.streams.values()];
    this.streams.clear();
    this.drainWaiters = [];
    for (const stream of streams) stream.closedByPeer(err);
    this.events.closed(this);
  }

  private fail(why: string): void {
    this.destroy(new MuxProtocolError(`mesh-mux protocol error: ${why}`));
  }
}
