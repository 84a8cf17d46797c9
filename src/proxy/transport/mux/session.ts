/**
 * A mesh-mux/1 session (frame.ts) on one TLS socket, in either role: the client opens
 * streams, the server accepts them. Frames written by any stream during one turn of the
 * event loop go out together, in one socket write after the turn (setImmediate): when a
 * proxy handles several requests per wakeup, they cross the pair in one TLS record.
 *
 * What a peer can make us hold is bounded: at most MAX_STREAMS streams, each at most
 * STREAM_WINDOW bytes unread, frames at most MAX_FRAME_PAYLOAD, and only a frame header
 * is ever buffered across reads (payloads are handed on as they arrive). Anything
 * outside the protocol tears the session down.
 */
import {
  DATA,
  FIN,
  GOAWAY,
  HEADER_BYTES,
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
import { MuxStream, type StreamHandler } from "./stream.ts";

/** The TLS socket under the session (a Bun socket). */
export interface SessionSocket {
  write(data: Uint8Array, byteOffset: number, byteLength: number): number;
  end(): unknown;
  terminate(): void;
  timeout(seconds: number): void;
}

export interface SessionEvents {
  /** Server role: the handler of a stream the peer opened, or undefined to refuse it. */
  accept?(stream: MuxStream): StreamHandler | undefined;
  /** Client role: the server takes no more streams on this session. */
  goaway?(session: MuxSession): void;
  /** A stream ended, by either side. */
  streamClosed?(session: MuxSession): void;
  /** The session is gone (once). */
  closed(session: MuxSession): void;
}

/** Output bytes above which streams wait for the socket (their write returns short). */
const HIGH_WATER = 256 * 1024;
const INITIAL_OUTPUT = 16 * 1024;
/**
 * Control frames (WINDOW, FIN, RESET) are queued whatever the room, and a peer can cause
 * them (a RESET for every stream it opens past the limit) without reading: past this,
 * it is not a peer that reads what it asks for, and the session ends.
 */
const OUTPUT_LIMIT = HIGH_WATER + 1024 * 1024;
const LAST_STREAM_ID = 0xffff_ffff;

export class MuxSession {
  readonly streams = new Map<number, MuxStream>();
  /** GOAWAY was sent (server) or heard (client): the client opens no more streams here. */
  draining = false;
  /** Server role: new streams are refused, and the session ends once its streams have. */
  private refusing = false;
  closed = false;
  /** Server role: the listener's idle time (see onTimeout). */
  idleTimeoutS = 0;
  /** `events.closed` was called. */
  private gone = false;
  private nextId = 1;
  /** Server role: the highest stream id a peer used, and the highest one accepted (GOAWAY names it). */
  private highestSeen = 0;
  private lastAccepted = 0;
  private readonly churn = new ChurnGuard();

  private out = Buffer.allocUnsafe(INITIAL_OUTPUT);
  /** Unsent output: out[outAt..outEnd). */
  private outAt = 0;
  private outEnd = 0;
  /** A flush is queued for the end of this turn of the event loop. */
  private flushQueued = false;
  /** The socket took less than offered; its drain continues. */
  private blocked = false;
  private endWhenFlushed = false;
  private drainWaiters: MuxStream[] = [];

  /** A frame header split across reads. */
  private readonly head = Buffer.allocUnsafe(HEADER_BYTES);
  private headHave = 0;
  /** The DATA frame being read: its stream (undefined: discard) and bytes to come. */
  private dataFor: MuxStream | undefined;
  private dataLeft = 0;

  constructor(
    private readonly socket: SessionSocket,
    readonly role: "client" | "server",
    private readonly events: SessionEvents,
  ) {}

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

  // ---- reading ----

  onData(chunk: Buffer): void {
    const end = chunk.byteLength;
    let at = 0;
    while (at < end && !this.closed) {
      if (this.dataLeft > 0) {
        const n = Math.min(this.dataLeft, end - at);
        this.dataLeft -= n;
        const stream = this.dataFor;
        if (stream !== undefined && stream.open) stream.received(n === end ? chunk : chunk.subarray(at, at + n));
        at += n;
        continue;
      }
      let frame: Buffer = chunk;
      let f = at;
      if (this.headHave === 0 && end - at >= HEADER_BYTES) at += HEADER_BYTES;
      else {
        const n = Math.min(HEADER_BYTES - this.headHave, end - at);
        chunk.copy(this.head, this.headHave, at, at + n);
        this.headHave += n;
        at += n;
        if (this.headHave < HEADER_BYTES) return;
        this.headHave = 0;
        frame = this.head;
        f = 0;
      }
      this.onFrame(frame[f]!, frame[f + 1]!, frame.readUInt32BE(f + 2), frame.readUInt32BE(f + 6));
    }
  }

  private onFrame(type: number, flags: number, id: number, value: number): void {
    if (flags !== 0) return this.fail(`frame flags ${flags} on stream ${id}`);
    if (id === 0 && type !== GOAWAY) return this.fail(`frame type ${type} on stream 0`);
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
        if (this.role === "server" && stream.handler?.idle === false && this.churn.endedBusy(performance.now() - stream.openedAt))
          return this.fail("most streams were ended with their request in flight right after they opened (rapid reset)");
        const err =
          type === FIN ? undefined : value === RESET_REFUSED ? new StreamRefusedError(`the peer refused stream ${id}`) : new Error(`the peer reset stream ${id}`);
        if (stream.closedByPeer(err)) this.forget(stream);
        return;
      }
      case GOAWAY:
        if (this.role !== "client" || id !== 0) return this.fail("GOAWAY sent by a client or on a stream");
        this.draining = true;
        this.events.goaway?.(this);
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
    const handler = this.refusing || this.streams.size >= MAX_STREAMS ? undefined : this.events.accept?.(stream);
    if (handler === undefined) {
      this.frame(RESET, id, RESET_REFUSED);
      return undefined;
    }
    this.lastAccepted = id;
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
    if (typeof data === "string" && n === length && n <= MAX_FRAME_PAYLOAD) {
      this.header(DATA, stream.id, n);
      this.out.write(data, this.outEnd, "latin1");
      this.outEnd += n;
    } else {
      const bytes = typeof data === "string" ? Buffer.from(data, "latin1") : data;
      for (let at = offset, left = n; left > 0; ) {
        const k = Math.min(left, MAX_FRAME_PAYLOAD);
        this.header(DATA, stream.id, k);
        // Buffer's copy, not a view: a view of a socket read would make JSC materialize its ArrayBuffer.
        Buffer.prototype.copy.call(bytes, this.out, this.outEnd, at, at + k);
        this.outEnd += k;
        at += k;
        left -= k;
      }
    }
    this.schedule();
    return n;
  }

  /** The stream closed on our side: FIN after what it wrote, or RESET. */
  finish(stream: MuxStream, reset: boolean): void {
    if (this.streams.get(stream.id) !== stream) return;
    this.streams.delete(stream.id);
    if (!this.closed) this.frame(reset ? RESET : FIN, stream.id, reset ? RESET_CANCEL : 0);
    this.streamGone();
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
    return HIGH_WATER - (this.outEnd - this.outAt);
  }

  private frame(type: number, id: number, value: number): void {
    if (this.outEnd - this.outAt > OUTPUT_LIMIT) return this.fail("the peer does not read what it is sent");
    this.header(type, id, value);
    this.schedule();
  }

  private header(type: number, id: number, value: number): void {
    this.reserve(HEADER_BYTES + (type === DATA ? value : 0));
    const o = this.out;
    const e = this.outEnd;
    o[e] = type;
    o[e + 1] = 0;
    o.writeUInt32BE(id, e + 2);
    o.writeUInt32BE(value, e + 6);
    this.outEnd = e + HEADER_BYTES;
  }

  /** Room for `n` more bytes at outEnd. */
  private reserve(n: number): void {
    if (this.outEnd + n <= this.out.byteLength) return;
    const used = this.outEnd - this.outAt;
    if (used + n <= this.out.byteLength) this.out.copyWithin(0, this.outAt, this.outEnd);
    else {
      const next = Buffer.allocUnsafe(Math.max(this.out.byteLength * 2, used + n));
      this.out.copy(next, 0, this.outAt, this.outEnd);
      this.out = next;
    }
    this.outAt = 0;
    this.outEnd = used;
  }

  /**
   * Output waits for the end of the loop's turn (setImmediate), so what every stream wrote
   * in it leaves in one write. Writing a turn's first frame at once when the last turn had
   * only one (light load) measured no better at one connection and 2–4% worse at 32.
   */
  private schedule(): void {
    if (this.flushQueued || this.blocked) return;
    this.flushQueued = true;
    setImmediate(this.flushTask);
  }

  private readonly flushTask = () => {
    this.flushQueued = false;
    this.flush();
  };

  private flush(): void {
    if (this.closed || this.blocked || !this.writeQueued()) return;
    if (this.endWhenFlushed) {
      this.closed = true;
      this.socket.end();
      return;
    }
    this.wakeWriters();
  }

  /** Writes what is queued; false when the socket took less (its drain continues) or is closed. */
  private writeQueued(): boolean {
    const length = this.outEnd - this.outAt;
    if (length === 0) return true;
    const n = this.socket.write(this.out, this.outAt, length);
    if (n < 0) return false; // closed under us: onClose follows
    if (n < length) {
      this.outAt += n;
      this.blocked = true;
      return false;
    }
    this.outAt = this.outEnd = 0;
    if (this.out.byteLength > INITIAL_OUTPUT * 4) this.out = Buffer.allocUnsafe(INITIAL_OUTPUT);
    return true;
  }

  onDrain(): void {
    if (!this.blocked) return;
    this.blocked = false;
    this.flush();
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

  /** Ends the session gracefully once what is queued went out. */
  close(): void {
    if (this.closed) return;
    this.draining = true;
    this.endWhenFlushed = true;
    this.schedule();
  }

  /** Server role: nothing read for the listener's idle time. Idle streams end; an empty session closes. */
  onTimeout(): void {
    for (const stream of [...this.streams.values()]) stream.handler?.onTimeout();
    if (this.streams.size === 0) this.close();
    else this.socket.timeout(this.idleTimeoutS);
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
