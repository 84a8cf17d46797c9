/**
 * One HTTP/2 connection's frame layer (RFC 9113), for the server (server-session.ts) and
 * the client (client-session.ts) alike: frames read and held to the protocol, header
 * blocks assembled (capped in bytes and in CONTINUATION frames) and decoded, SETTINGS,
 * PING and WINDOW_UPDATE answered and applied, and the peer's windows given back as
 * bodies are read. Sending (bodies within the peer's windows, every frame a turn writes
 * in one socket write at its end) is its base class's, connection-output.ts. What is
 * particular to a side — streams opened, requests or responses, GOAWAY — is left to the
 * subclass.
 *
 * What the peer may not do costs it the connection (GOAWAY with the error, the reason as
 * its debug data) or the stream (RST_STREAM); replies a peer is owed while it reads
 * nothing are capped (CVE-2019-9512, -9515), as are empty DATA frames (CVE-2019-9518).
 */
import { HpackDecoder, HpackError } from "./hpack.ts";
import { DEFAULT_MAX_FRAME, DEFAULT_WINDOW, ErrorCode, Flag, FrameType, FRAME_HEADER_BYTES, MAX_FRAME_CEILING, MAX_WINDOW, Setting } from "./frames.ts";
import { H2ConnectionOutput } from "./connection-output.ts";
import type { WireStream } from "./wire-stream.ts";

/** A stream's receive window; the connection's is opened this far past the default at the start. */
export const STREAM_WINDOW = DEFAULT_WINDOW;
const CONNECTION_WINDOW = 1 << 20;
/** A header block in more pieces than this ends the connection (CONTINUATION floods). */
const MAX_BLOCK_FRAGMENTS = 64;
/** Empty DATA frames without END_STREAM carry nothing; past this many, the peer is flooding. */
const MAX_EMPTY_FRAMES = 1000;

export class ConnectionError extends Error {
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

export abstract class H2Connection extends H2ConnectionOutput {
  protected readonly decoder = new HpackDecoder();
  private unackedConnection = 0;
  private peerInitialWindow = DEFAULT_WINDOW;
  /** The peer's SETTINGS_MAX_CONCURRENT_STREAMS: unlimited until it says. */
  protected peerMaxStreams = Infinity;
  private pending: Buffer | undefined;
  /** The peer's first SETTINGS arrived. */
  protected settled = false;
  private block: PendingBlock | undefined;
  private emptyFrames = 0;

  /**
   * Writes our preface's SETTINGS (`settings`: [id, value] pairs) and opens the
   * connection's window. Called by the subclass's constructor once it can write.
   */
  protected start(settings: readonly (readonly [Setting, number])[]): void {
    this.out.header(6 * settings.length, FrameType.SETTINGS, 0, 0);
    for (const [id, value] of settings) {
      this.out.u16(id);
      this.out.u32(value);
    }
    this.windowUpdate(0, CONNECTION_WINDOW - DEFAULT_WINDOW);
  }

  // ---- what a side provides (with connection-output.ts's) ----

  /** The largest header list this side takes (its SETTINGS_MAX_HEADER_LIST_SIZE). */
  protected abstract readonly maxHeaderListBytes: number;
  /** A stream error (RFC 9113 §5.4.2): the stream is reset, the connection goes on. */
  protected abstract streamError(id: number, code: ErrorCode): void;
  /** The open stream `id`, if any. */
  protected abstract streamOf(id: number): WireStream | undefined;
  /** Whether `id` names a stream never opened (a frame on it is a connection error). */
  protected abstract isIdle(id: number): boolean;
  /** A whole header block, decoded (`decoder.listBytes` holds its size). */
  protected abstract headerBlock(id: number, fields: string[], endStream: boolean): void;
  /** A DATA frame's payload buf[from, to) for an open stream, within its window. */
  protected abstract streamData(stream: WireStream, buf: Buffer, from: number, to: number, endStream: boolean): void;
  protected abstract streamReset(id: number, code: number): void;
  protected abstract goawayReceived(lastStreamId: number, code: number): void;
  /** The peer's SETTINGS were applied (the first time: `settled` is now true). */
  protected abstract settingsApplied(): void;
  /** Bytes before the first frame the side expects (the client's preface, on a server): how many were consumed, or -1 for more. */
  protected readPreface(_buf: Buffer): number {
    return 0;
  }

  // ---- reading ----

  onData(chunk: Buffer): void {
    if (this.over) return;
    let buf = chunk;
    if (this.pending !== undefined) {
      buf = Buffer.concat([this.pending, chunk]);
      this.pending = undefined;
    }
    try {
      let at = this.readPreface(buf);
      if (at < 0) return void (this.pending = buf);
      while (buf.byteLength - at >= FRAME_HEADER_BYTES && !this.over) {
        const length = (buf[at]! << 16) | (buf[at + 1]! << 8) | buf[at + 2]!;
        if (length > DEFAULT_MAX_FRAME) throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, `a frame of ${length} bytes, past SETTINGS_MAX_FRAME_SIZE`);
        const end = at + FRAME_HEADER_BYTES + length;
        if (end > buf.byteLength) break;
        this.frame(buf[at + 3]!, buf[at + 4]!, buf.readUInt32BE(at + 5) & 0x7fff_ffff, buf, at + FRAME_HEADER_BYTES, end);
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
    if (!this.settled && type !== FrameType.SETTINGS) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "the peer's preface did not start with SETTINGS");
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
        if (id === 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "RST_STREAM on stream 0");
        if (end - start !== 4) throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "RST_STREAM of other than 4 bytes");
        if (this.isIdle(id)) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, `RST_STREAM on idle stream ${id}`);
        return this.streamReset(id, buf.readUInt32BE(start));
      case FrameType.SETTINGS:
        return this.onSettings(flags, id, buf, start, end);
      case FrameType.PUSH_PROMISE:
        throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "PUSH_PROMISE, which this side never allows");
      case FrameType.PING:
        if (id !== 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "PING on a stream");
        if (end - start !== 8) throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "PING of other than 8 bytes");
        if ((flags & Flag.ACK) !== 0) return;
        this.owe();
        this.out.header(8, FrameType.PING, Flag.ACK, 0);
        this.out.bytes(buf, start, end);
        return this.hold();
      case FrameType.GOAWAY:
        if (id !== 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "GOAWAY on a stream");
        if (end - start < 8) throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "GOAWAY shorter than 8 bytes");
        return this.goawayReceived(buf.readUInt32BE(start) & 0x7fff_ffff, buf.readUInt32BE(start + 4));
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
    if (this.isIdle(id)) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, `DATA on idle stream ${id}`);
    const length = end - start;
    // The connection's window is opened again at once: what a stream holds is bounded by its own
    // (at most 100 × 64 KiB a connection). Held until read, it would let 16 slow readers stall
    // every other caller's calls on a shared session (test/proxy/h2-wire/connection-window.test.ts).
    this.unackedConnection += length;
    if (this.unackedConnection >= CONNECTION_WINDOW / 2) {
      this.windowUpdate(0, this.unackedConnection);
      this.unackedConnection = 0;
    }
    const [from, to] = this.unpadded(flags, buf, start, end, 0);
    const endStream = (flags & Flag.END_STREAM) !== 0;
    if (to === from && !endStream && ++this.emptyFrames > MAX_EMPTY_FRAMES) throw new ConnectionError(ErrorCode.ENHANCE_YOUR_CALM, "too many empty DATA frames");
    const stream = this.streamOf(id);
    // A stream this side has reset or finished: what was in flight is dropped.
    if (stream === undefined) return;
    if (stream.remoteEnded) return this.streamError(id, ErrorCode.STREAM_CLOSED);
    stream.recvWindow -= length;
    if (stream.recvWindow < 0) return this.streamError(id, ErrorCode.FLOW_CONTROL_ERROR);
    // Padding is flow-controlled but never delivered: given back now.
    if (length > to - from) this.consumed(stream, length - (to - from));
    this.streamData(stream, buf, from, to, endStream);
  }

  private onHeaders(flags: number, id: number, buf: Buffer, start: number, end: number): void {
    if (id === 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "HEADERS on stream 0");
    const [from, to] = this.unpadded(flags, buf, start, end, (flags & Flag.PRIORITY) !== 0 ? 5 : 0);
    if (from > to) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "HEADERS shorter than its priority fields");
    const part = buf.subarray(from, to);
    const block: PendingBlock = { stream: id, endStream: (flags & Flag.END_STREAM) !== 0, parts: [part], bytes: part.byteLength };
    if ((flags & Flag.END_HEADERS) === 0) {
      this.block = block;
      return;
    }
    this.decodeBlock(block);
  }

  private onContinuation(flags: number, id: number, buf: Buffer, start: number, end: number): void {
    const block = this.block;
    if (block === undefined || block.stream !== id) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "CONTINUATION without its HEADERS");
    block.parts.push(buf.subarray(start, end));
    block.bytes += end - start;
    // CONTINUATION floods: a block past twice the largest header list, or in too many pieces.
    if (block.bytes > 2 * this.maxHeaderListBytes || block.parts.length > MAX_BLOCK_FRAGMENTS) throw new ConnectionError(ErrorCode.ENHANCE_YOUR_CALM, "a header block too large, or in too many pieces");
    if ((flags & Flag.END_HEADERS) === 0) return;
    this.block = undefined;
    this.decodeBlock(block);
  }

  /** Always decoded, whatever becomes of the stream, so HPACK's table stays in step. */
  private decodeBlock(block: PendingBlock): void {
    const bytes = block.parts.length === 1 ? block.parts[0]! : Buffer.concat(block.parts);
    this.headerBlock(block.stream, this.decoder.decode(bytes), block.endStream);
  }

  private onSettings(flags: number, id: number, buf: Buffer, start: number, end: number): void {
    if (id !== 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "SETTINGS on a stream");
    if ((flags & Flag.ACK) !== 0) {
      if (end !== start) throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "a SETTINGS acknowledgement with a payload");
      return;
    }
    if ((end - start) % 6 !== 0) throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS not a multiple of 6 bytes");
    for (let at = start; at < end; at += 6) {
      const value = buf.readUInt32BE(at + 2);
      switch (buf.readUInt16BE(at)) {
        case Setting.ENABLE_PUSH:
          if (value > 1) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "SETTINGS_ENABLE_PUSH other than 0 or 1");
          break;
        case Setting.INITIAL_WINDOW_SIZE:
          if (value > MAX_WINDOW) throw new ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE past 2^31-1");
          this.newInitialWindow(value);
          break;
        case Setting.MAX_FRAME_SIZE:
          if (value < DEFAULT_MAX_FRAME || value > MAX_FRAME_CEILING) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "SETTINGS_MAX_FRAME_SIZE out of range");
          this.peerMaxFrame = value;
          break;
        case Setting.MAX_CONCURRENT_STREAMS:
          this.peerMaxStreams = value;
          break;
        // HEADER_TABLE_SIZE: our encoder keeps no dynamic table, so any size is honoured.
      }
    }
    this.owe();
    this.out.header(0, FrameType.SETTINGS, Flag.ACK, 0);
    this.hold();
    this.settled = true;
    this.settingsApplied();
  }

  /** A new SETTINGS_INITIAL_WINDOW_SIZE moves every open stream's window by the difference (RFC 9113 §6.9.2). */
  private newInitialWindow(value: number): void {
    const delta = value - this.peerInitialWindow;
    this.peerInitialWindow = value;
    this.eachStream((stream) => {
      stream.sendWindow += delta;
      if (stream.sendWindow > MAX_WINDOW) throw new ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, "a stream's window past 2^31-1");
    });
    if (delta > 0) this.flushBlocked();
  }

  /** The window a new stream may send in. */
  protected get initialSendWindow(): number {
    return this.peerInitialWindow;
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
    if (this.isIdle(id)) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, `WINDOW_UPDATE on idle stream ${id}`);
    const stream = this.streamOf(id);
    if (stream === undefined) return;
    if (increment === 0) return this.streamError(id, ErrorCode.PROTOCOL_ERROR);
    stream.sendWindow += increment;
    if (stream.sendWindow > MAX_WINDOW) return this.streamError(id, ErrorCode.FLOW_CONTROL_ERROR);
    if (this.windowBlocked.has(stream) && this.flushStream(stream)) stream.onDrain();
  }

  /** The reader took `bytes` of the stream's body: once half its window is used, the peer may send that much again. */
  consumed(stream: WireStream, bytes: number): void {
    stream.unacked += bytes;
    if (stream.unacked < STREAM_WINDOW / 2 || stream.remoteEnded || stream.closed) return;
    stream.recvWindow += stream.unacked;
    this.windowUpdate(stream.id, stream.unacked);
    stream.unacked = 0;
  }
}
