/**
 * The server side of one HTTP/2 connection (RFC 9113), on a listener's own socket: the
 * client's preface and SETTINGS, its frames read and held to the protocol, request
 * streams handed to `onStream` (server-stream.ts), responses framed within the peer's
 * flow-control windows, and every frame a turn writes sent in one socket write at its end.
 *
 * What a client may not do costs it the connection (GOAWAY with the error) or its stream
 * (RST_STREAM), and never grows what this side holds without bound: a header block is
 * capped in bytes and in CONTINUATION frames, a stream's unread body by its window, the
 * streams at once by SETTINGS_MAX_CONCURRENT_STREAMS, replies to PING and SETTINGS by the
 * socket (reading stops while it is full), and a client that resets most streams right
 * after opening them is cut off (rapid reset: ../../transport/mux/churn.ts).
 */
import type { ServerConnection } from "../../transport/h1-server/connection.ts";
import { holdToEndOfTurn, type HeldWrite } from "../../transport/turn-writes.ts";
import { ChurnGuard } from "../../transport/mux/churn.ts";
import { HpackDecoder, HpackEncoder, HpackError } from "./hpack.ts";
import { DEFAULT_MAX_FRAME, DEFAULT_WINDOW, ErrorCode, Flag, FrameOutput, FrameType, FRAME_HEADER_BYTES, MAX_FRAME_CEILING, MAX_WINDOW, PREFACE, Setting } from "./frames.ts";
import { requestHeaders, trailerProblem } from "./request-fields.ts";
import { H2ServerStream, type StreamSession } from "./server-stream.ts";

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

/** A stream's window, and how much the connection's is opened past the default at the start. */
const STREAM_WINDOW = DEFAULT_WINDOW;
const CONNECTION_WINDOW = 1 << 20;
/** A header block larger than the list limit allows, or in more pieces, ends the connection (CONTINUATION floods). */
const MAX_BLOCK_FRAGMENTS = 64;
/** Empty DATA frames without END_STREAM carry nothing; a flood of them is an attack (CVE-2019-9518). */
const MAX_EMPTY_FRAMES = 1000;
/**
 * Replies a client may be owed (PING and SETTINGS acknowledgements, resets) while it reads
 * nothing: past it, it is cut off (CVE-2019-9512, -9515), and what waits for it stays bounded.
 */
const MAX_OWED_WHILE_BLOCKED = 10_000;

class ConnectionError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
  ) {
    super(message);
  }
}

/** A header block being assembled from HEADERS and CONTINUATION frames. */
interface PendingBlock {
  stream: number;
  endStream: boolean;
  parts: Buffer[];
  bytes: number;
}

export class H2ServerSession implements StreamSession, HeldWrite {
  private readonly decoder = new HpackDecoder();
  private readonly encoder = new HpackEncoder();
  private readonly out = new FrameOutput();
  private held = false;
  private readonly streams = new Map<number, H2ServerStream>();
  /** Streams with body queued past a window: sent as WINDOW_UPDATEs arrive. */
  private readonly windowBlocked = new Set<H2ServerStream>();
  private lastStreamId = 0;
  private sendWindow = DEFAULT_WINDOW;
  private unackedConnection = 0;
  private peerInitialWindow = DEFAULT_WINDOW;
  private peerMaxFrame = DEFAULT_MAX_FRAME;
  private pending: Buffer | undefined;
  private prefaceRead = false;
  private settingsRead = false;
  private block: PendingBlock | undefined;
  private emptyFrames = 0;
  private readonly churn = new ChurnGuard();
  /** GOAWAY sent: no stream past lastStreamId is taken, and the connection ends when the last one does. */
  private goingAway = false;
  private over = false;
  /** One timer for the session's life: streams opening and closing only move `idleSince`. */
  private idleTimer: Timer | undefined;
  /** performance.now() when the last stream closed (or the session opened). */
  private idleSince = performance.now();
  blocked = false;
  /** Replies written while the socket took nothing (see MAX_OWED_WHILE_BLOCKED). */
  private owed = 0;

  constructor(
    private readonly conn: ServerConnection,
    private readonly limits: SessionLimits,
    private readonly events: SessionEvents,
  ) {
    conn.tunnel = (chunk) => this.onData(chunk as Buffer);
    conn.onTunnelDrain = () => this.onSocketDrain();
    conn.onTunnelClose = () => this.onConnectionGone();
    conn.onTunnelRetire = () => this.retire();
    this.out.header(18, FrameType.SETTINGS, 0, 0);
    this.out.u16(Setting.MAX_CONCURRENT_STREAMS);
    this.out.u32(limits.maxConcurrentStreams);
    this.out.u16(Setting.MAX_HEADER_LIST_SIZE);
    this.out.u32(limits.maxHeaderListBytes);
    this.out.u16(Setting.ENABLE_PUSH);
    this.out.u32(0);
    this.windowUpdate(0, CONNECTION_WINDOW - DEFAULT_WINDOW);
    this.armIdle(limits.idleSessionMs);
  }

  get streamCount(): number {
    return this.streams.size;
  }

  // ---- reading ----

  onData(chunk: Buffer): void {
    if (this.over) return;
    let buf = chunk;
    if (this.pending !== undefined) {
      buf = Buffer.concat([this.pending, chunk]);
      this.pending = undefined;
    }
    let at = 0;
    try {
      if (!this.prefaceRead) {
        if (buf.byteLength < PREFACE.byteLength) return void (this.pending = buf);
        if (buf.compare(PREFACE, 0, PREFACE.byteLength, 0, PREFACE.byteLength) !== 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "not the HTTP/2 connection preface");
        this.prefaceRead = true;
        at = PREFACE.byteLength;
      }
      while (buf.byteLength - at >= FRAME_HEADER_BYTES && !this.over) {
        const length = (buf[at]! << 16) | (buf[at + 1]! << 8) | buf[at + 2]!;
        if (length > DEFAULT_MAX_FRAME) throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, `a frame of ${length} bytes, past SETTINGS_MAX_FRAME_SIZE`);
        const end = at + FRAME_HEADER_BYTES + length;
        if (end > buf.byteLength) break;
        const type = buf[at + 3]!;
        const flags = buf[at + 4]!;
        const id = buf.readUInt32BE(at + 5) & 0x7fff_ffff;
        this.frame(type, flags, id, buf, at + FRAME_HEADER_BYTES, end);
        at = end;
      }
      if (at < buf.byteLength && !this.over) this.pending = at === 0 ? buf : buf.subarray(at);
    } catch (err) {
      if (err instanceof ConnectionError) return this.fail(err.code, err.message);
      if (err instanceof HpackError) return this.fail(ErrorCode.COMPRESSION_ERROR, err.message);
      throw err;
    }
  }

  private frame(type: number, flags: number, id: number, buf: Buffer, start: number, end: number): void {
    if (!this.settingsRead && type !== FrameType.SETTINGS) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "the client's preface did not end with SETTINGS");
    if (this.block !== undefined && type !== FrameType.CONTINUATION) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "a frame inside a header block");
    switch (type) {
      case FrameType.DATA:
        return this.onDataFrame(flags, id, buf, start, end);
      case FrameType.HEADERS:
        return this.onHeaders(flags, id, buf, start, end);
      case FrameType.PRIORITY:
        if (id === 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "PRIORITY on stream 0");
        if (end - start !== 5) return this.streamError(id, ErrorCode.FRAME_SIZE_ERROR);
        return;
      case FrameType.RST_STREAM:
        return this.onReset(id, buf, start, end);
      case FrameType.SETTINGS:
        return this.onSettings(flags, id, buf, start, end);
      case FrameType.PUSH_PROMISE:
        throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "PUSH_PROMISE from a client");
      case FrameType.PING:
        if (id !== 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "PING on a stream");
        if (end - start !== 8) throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "PING of other than 8 bytes");
        if ((flags & Flag.ACK) === 0) {
          this.owe();
          this.out.header(8, FrameType.PING, Flag.ACK, 0);
          this.out.bytes(buf, start, end);
          this.hold();
        }
        return;
      case FrameType.GOAWAY:
        if (id !== 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "GOAWAY on a stream");
        // The client opens no more streams; those open finish.
        this.goingAway = true;
        return this.endIfDone();
      case FrameType.WINDOW_UPDATE:
        return this.onWindowUpdate(id, buf, start, end);
      case FrameType.CONTINUATION:
        return this.onContinuation(flags, id, buf, start, end);
      default:
      // Unknown frame types are ignored (RFC 9113 §4.1).
    }
  }

  /** The payload of a padded frame, without its padding: [from, to). */
  private unpadded(flags: number, buf: Buffer, start: number, end: number, extra: number): [number, number] {
    if ((flags & Flag.PADDED) === 0) return [start + extra, end];
    const pad = start < end ? buf[start]! : 0;
    if (start === end || start + 1 + extra + pad > end) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "padding longer than the frame");
    return [start + 1 + extra, end - pad];
  }

  private onDataFrame(flags: number, id: number, buf: Buffer, start: number, end: number): void {
    if (id === 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "DATA on stream 0");
    if (id > this.lastStreamId) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, `DATA on idle stream ${id}`);
    const length = end - start;
    // The connection's window is opened again at once: what a stream holds is bounded by its own.
    this.unackedConnection += length;
    if (this.unackedConnection >= CONNECTION_WINDOW / 2) {
      this.windowUpdate(0, this.unackedConnection);
      this.unackedConnection = 0;
    }
    const [from, to] = this.unpadded(flags, buf, start, end, 0);
    const endStream = (flags & Flag.END_STREAM) !== 0;
    if (to === from && !endStream && ++this.emptyFrames > MAX_EMPTY_FRAMES) throw new ConnectionError(ErrorCode.ENHANCE_YOUR_CALM, "too many empty DATA frames");
    const stream = this.streams.get(id);
    // A stream this side has reset or finished: what was in flight is dropped.
    if (stream === undefined) return;
    if (stream.remoteEnded) return this.streamError(id, ErrorCode.STREAM_CLOSED);
    stream.recvWindow -= length;
    if (stream.recvWindow < 0) return this.streamError(id, ErrorCode.FLOW_CONTROL_ERROR);
    // Padding is flow-controlled but never delivered: given back now.
    if (length > to - from) this.consumed(stream, length - (to - from));
    if (stream.expectedLength >= 0 && stream.received + (to - from) > stream.expectedLength) return this.malformed(stream);
    if (to > from) stream.onData(buf.subarray(from, to));
    if (!endStream) return;
    if (stream.expectedLength >= 0 && stream.received !== stream.expectedLength) return this.malformed(stream);
    stream.onEnd();
  }

  private onHeaders(flags: number, id: number, buf: Buffer, start: number, end: number): void {
    if (id === 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "HEADERS on stream 0");
    const [from, to] = this.unpadded(flags, buf, start, end, (flags & Flag.PRIORITY) !== 0 ? 5 : 0);
    if (from > to) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "HEADERS shorter than its priority fields");
    const part = buf.subarray(from, to);
    const block: PendingBlock = { stream: id, endStream: (flags & Flag.END_STREAM) !== 0, parts: [part], bytes: part.byteLength };
    if ((flags & Flag.END_HEADERS) === 0) {
      this.block = block;
      return this.checkBlockSize(block);
    }
    this.headerBlock(block);
  }

  private onContinuation(flags: number, id: number, buf: Buffer, start: number, end: number): void {
    const block = this.block;
    if (block === undefined || block.stream !== id) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "CONTINUATION without its HEADERS");
    block.parts.push(buf.subarray(start, end));
    block.bytes += end - start;
    this.checkBlockSize(block);
    if ((flags & Flag.END_HEADERS) === 0) return;
    this.block = undefined;
    this.headerBlock(block);
  }

  private checkBlockSize(block: PendingBlock): void {
    if (block.bytes > this.limits.maxHeaderListBytes * 2 || block.parts.length > MAX_BLOCK_FRAGMENTS)
      throw new ConnectionError(ErrorCode.ENHANCE_YOUR_CALM, "a header block too large, or in too many pieces");
  }

  /** A whole header block: a new stream's request, or a stream's trailers. Always decoded, so HPACK's table stays in step. */
  private headerBlock(block: PendingBlock): void {
    const bytes = block.parts.length === 1 ? block.parts[0]! : Buffer.concat(block.parts);
    const fields = this.decoder.decode(bytes);
    const id = block.stream;
    if (id <= this.lastStreamId) return this.trailersOf(id, fields, block.endStream);
    if ((id & 1) === 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, `a client stream with even id ${id}`);
    this.lastStreamId = id;
    // After GOAWAY, new streams are ignored (RFC 9113 §6.8); past the limit, refused unprocessed.
    if (this.goingAway) return;
    if (this.streams.size >= this.limits.maxConcurrentStreams) {
      this.events.refused("streams");
      return this.sendRst(id, ErrorCode.REFUSED_STREAM);
    }
    if (this.decoder.listBytes > this.limits.maxHeaderListBytes) {
      this.events.refused("head-too-large");
      return this.answerTooLarge(id, block.endStream);
    }
    const headers = requestHeaders(fields);
    if (typeof headers === "string") {
      this.events.refused("malformed");
      return this.sendRst(id, ErrorCode.PROTOCOL_ERROR);
    }
    const stream = new H2ServerStream(this, id, headers, this.conn.peer, STREAM_WINDOW, this.peerInitialWindow);
    this.streams.set(id, stream);
    this.churn.streamOpened();
    if (block.endStream) {
      if (stream.expectedLength > 0) return this.malformed(stream);
      stream.onEnd();
    }
    this.events.stream(stream);
  }

  private trailersOf(id: number, fields: string[], endStream: boolean): void {
    const stream = this.streams.get(id);
    if (stream === undefined) return;
    if (stream.remoteEnded) return this.streamError(id, ErrorCode.STREAM_CLOSED);
    if (!endStream) return this.malformed(stream);
    if (trailerProblem(fields) !== undefined) return this.malformed(stream);
    if (stream.expectedLength >= 0 && stream.received !== stream.expectedLength) return this.malformed(stream);
    // Request trailers are not relayed (no HTTP/1.1 service reads them, and gRPC sends none): the body ends.
    stream.onEnd();
  }

  private onReset(id: number, buf: Buffer, start: number, end: number): void {
    if (id === 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "RST_STREAM on stream 0");
    if (end - start !== 4) throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "RST_STREAM of other than 4 bytes");
    if (id > this.lastStreamId) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, `RST_STREAM on idle stream ${id}`);
    const stream = this.streams.get(id);
    if (stream === undefined) return;
    const busy = !stream.responseEnded;
    stream.onGone(buf.readUInt32BE(start) || ErrorCode.CANCEL);
    // Rapid reset: the session ends gracefully, other callers' calls on it finishing.
    if (busy && this.churn.endedBusy(performance.now() - stream.openedAt)) this.retire();
  }

  private onSettings(flags: number, id: number, buf: Buffer, start: number, end: number): void {
    if (id !== 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "SETTINGS on a stream");
    if ((flags & Flag.ACK) !== 0) {
      if (end !== start) throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "a SETTINGS acknowledgement with a payload");
      return;
    }
    if ((end - start) % 6 !== 0) throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS not a multiple of 6 bytes");
    this.settingsRead = true;
    for (let at = start; at < end; at += 6) {
      const setting = buf.readUInt16BE(at);
      const value = buf.readUInt32BE(at + 2);
      if (setting === Setting.ENABLE_PUSH && value > 1) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "SETTINGS_ENABLE_PUSH other than 0 or 1");
      if (setting === Setting.INITIAL_WINDOW_SIZE) {
        if (value > MAX_WINDOW) throw new ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE past 2^31-1");
        this.newInitialWindow(value);
      }
      if (setting === Setting.MAX_FRAME_SIZE) {
        if (value < DEFAULT_MAX_FRAME || value > MAX_FRAME_CEILING) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "SETTINGS_MAX_FRAME_SIZE out of range");
        this.peerMaxFrame = value;
      }
      // HEADER_TABLE_SIZE: our encoder keeps no dynamic table, so any size is honoured.
    }
    this.owe();
    this.out.header(0, FrameType.SETTINGS, Flag.ACK, 0);
    this.hold();
  }

  /** A new SETTINGS_INITIAL_WINDOW_SIZE moves every open stream's window by the difference (RFC 9113 §6.9.2). */
  private newInitialWindow(value: number): void {
    const delta = value - this.peerInitialWindow;
    this.peerInitialWindow = value;
    for (const stream of this.streams.values()) {
      stream.sendWindow += delta;
      if (stream.sendWindow > MAX_WINDOW) throw new ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, "a stream's window past 2^31-1");
    }
    if (delta > 0) this.flushBlocked();
  }

  private onWindowUpdate(id: number, buf: Buffer, start: number, end: number): void {
    if (end - start !== 4) throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "WINDOW_UPDATE of other than 4 bytes");
    const increment = buf.readUInt32BE(start) & 0x7fff_ffff;
    if (id === 0) {
      if (increment === 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "a WINDOW_UPDATE of 0");
      this.sendWindow += increment;
      if (this.sendWindow > MAX_WINDOW) throw new ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, "the connection's window past 2^31-1");
      return this.flushBlocked();
    }
    if (id > this.lastStreamId) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, `WINDOW_UPDATE on idle stream ${id}`);
    const stream = this.streams.get(id);
    if (stream === undefined) return;
    if (increment === 0) return this.streamError(id, ErrorCode.PROTOCOL_ERROR);
    stream.sendWindow += increment;
    if (stream.sendWindow > MAX_WINDOW) return this.streamError(id, ErrorCode.FLOW_CONTROL_ERROR);
    if (this.windowBlocked.has(stream) && this.flushStream(stream)) stream.onDrain();
  }

  // ---- writing ----

  sendHeaders(stream: H2ServerStream, fields: string[], endStream: boolean): void {
    this.headerFrames(stream.id, this.encoder.encode(fields), endStream);
  }

  /** A header block in HEADERS and, past the peer's frame size, CONTINUATION frames. */
  private headerFrames(id: number, block: Buffer, endStream: boolean): void {
    const max = this.peerMaxFrame;
    let at = Math.min(block.byteLength, max);
    const last = at === block.byteLength;
    this.out.header(at, FrameType.HEADERS, (endStream ? Flag.END_STREAM : 0) | (last ? Flag.END_HEADERS : 0), id);
    this.out.bytes(block, 0, at);
    while (at < block.byteLength) {
      const n = Math.min(block.byteLength - at, max);
      this.out.header(n, FrameType.CONTINUATION, at + n === block.byteLength ? Flag.END_HEADERS : 0, id);
      this.out.bytes(block, at, at + n);
      at += n;
    }
    this.hold();
  }

  flushStream(stream: H2ServerStream): boolean {
    const queue = stream.queued;
    while (queue.length > 0) {
      const chunk = queue[0]!;
      const room = Math.min(stream.sendWindow, this.sendWindow, this.peerMaxFrame);
      if (room <= 0) {
        this.windowBlocked.add(stream);
        this.hold();
        return false;
      }
      const n = Math.min(room, chunk.byteLength);
      const last = n === chunk.byteLength && queue.length === 1;
      const endsHere = last && stream.endQueued && stream.trailers === undefined;
      this.out.header(n, FrameType.DATA, endsHere ? Flag.END_STREAM : 0, stream.id);
      this.out.bytes(chunk, 0, n);
      stream.sendWindow -= n;
      this.sendWindow -= n;
      stream.queuedBytes -= n;
      if (n === chunk.byteLength) queue.shift();
      else queue[0] = chunk.subarray(n);
      if (endsHere) {
        this.hold();
        this.windowBlocked.delete(stream);
        stream.onResponseSent();
        return true;
      }
    }
    this.hold();
    this.windowBlocked.delete(stream);
    if (stream.endQueued) {
      if (stream.trailers !== undefined) this.headerFrames(stream.id, this.encoder.encode(stream.trailers), true);
      else this.out.header(0, FrameType.DATA, Flag.END_STREAM, stream.id);
      stream.onResponseSent();
    }
    return true;
  }

  private flushBlocked(): void {
    for (const stream of [...this.windowBlocked]) {
      if (this.sendWindow <= 0) return;
      if (this.flushStream(stream)) stream.onDrain();
    }
  }

  sendReset(stream: H2ServerStream, code: number): void {
    this.sendRst(stream.id, code);
  }

  private sendRst(id: number, code: number): void {
    this.owe();
    this.out.header(4, FrameType.RST_STREAM, 0, id);
    this.out.u32(code);
    this.hold();
  }

  consumed(stream: H2ServerStream, bytes: number): void {
    // Opened again once half of it was used: one WINDOW_UPDATE per half window, not per frame.
    stream.unacked += bytes;
    if (stream.unacked < STREAM_WINDOW / 2 || stream.remoteEnded || stream.closed) return;
    stream.recvWindow += stream.unacked;
    this.windowUpdate(stream.id, stream.unacked);
    stream.unacked = 0;
  }

  private windowUpdate(id: number, increment: number): void {
    this.out.header(4, FrameType.WINDOW_UPDATE, 0, id);
    this.out.u32(increment);
    this.hold();
  }

  private hold(): void {
    if (this.held || this.over) return;
    this.held = true;
    holdToEndOfTurn(this);
  }

  flushHeld(): void {
    this.held = false;
    if (this.out.length === 0 || this.over) return;
    const written = this.conn.write(this.out.written, 0, this.out.length);
    this.out.clear();
    if (!written) this.blocked = true;
  }

  /** A reply is owed the client: one too many while it reads nothing ends the connection. */
  private owe(): void {
    if (this.blocked && ++this.owed > MAX_OWED_WHILE_BLOCKED) this.fail(ErrorCode.ENHANCE_YOUR_CALM, "a flood of frames owing replies, none of them read");
  }

  private onSocketDrain(): void {
    if (!this.blocked) return;
    this.blocked = false;
    this.owed = 0;
    for (const stream of this.streams.values()) if (!this.windowBlocked.has(stream)) stream.onDrain();
  }

  // ---- streams and the session's end ----

  closed(stream: H2ServerStream): void {
    this.streams.delete(stream.id);
    this.windowBlocked.delete(stream);
    if (this.streams.size === 0) {
      this.idleSince = performance.now();
      this.endIfDone();
    }
  }

  /** A stream error (RFC 9113 §5.4.2): the stream is reset, the connection goes on. */
  private streamError(id: number, code: ErrorCode): void {
    this.sendRst(id, code);
    this.streams.get(id)?.onGone(code);
  }

  /** A malformed request (RFC 9113 §8.1.1): its stream is reset with PROTOCOL_ERROR. */
  private malformed(stream: H2ServerStream): void {
    this.events.refused("malformed");
    this.streamError(stream.id, ErrorCode.PROTOCOL_ERROR);
  }

  /** A request head past the limit gets 431, as an HTTP/1.1 one does. */
  private answerTooLarge(id: number, endStream: boolean): void {
    this.headerFrames(id, this.encoder.encode([":status", "431", "content-length", "0"]), true);
    if (!endStream) this.sendRst(id, ErrorCode.NO_ERROR);
  }

  /** GOAWAY: streams open finish, no new ones start, and the connection ends after the last. */
  retire(): void {
    if (this.over) return;
    if (!this.goingAway) this.goaway(ErrorCode.NO_ERROR);
    this.goingAway = true;
    this.endIfDone();
  }

  /** Ends now: open streams are reset, so none reads as complete. */
  stop(): void {
    if (this.over) return;
    for (const stream of [...this.streams.values()]) stream.reset(ErrorCode.CANCEL);
    this.fail(ErrorCode.NO_ERROR, "the sidecar stopped");
  }

  /** GOAWAY, with `why` as its debug data (RFC 9113 §6.8), which clients such as nghttp print. */
  private goaway(code: ErrorCode, why = ""): void {
    const debug = Buffer.from(why, "latin1");
    this.out.header(8 + debug.byteLength, FrameType.GOAWAY, 0, 0);
    this.out.u32(this.lastStreamId);
    this.out.u32(code);
    this.out.bytes(debug, 0, debug.byteLength);
    this.hold();
  }

  private endIfDone(): void {
    if (!this.goingAway || this.streams.size > 0 || this.over) return;
    this.end();
  }

  /** A connection error (RFC 9113 §5.4.1): GOAWAY with its code, every stream gone, the connection ended. */
  private fail(code: ErrorCode, why: string): void {
    if (this.over) return;
    this.goaway(code, why);
    for (const stream of [...this.streams.values()]) stream.onGone(0);
    this.end();
  }

  /** Ends the connection once what was written is sent; at once, as a reset, for a client that reads nothing (it would never be). */
  private end(): void {
    this.flushHeld();
    this.over = true;
    clearTimeout(this.idleTimer);
    if (this.blocked) this.conn.shutdown(true);
    else this.conn.endTunnel();
    this.events.closed(this);
  }

  private onConnectionGone(): void {
    if (this.over) return;
    this.over = true;
    clearTimeout(this.idleTimer);
    for (const stream of [...this.streams.values()]) stream.onGone(0);
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
