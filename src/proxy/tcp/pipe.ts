/**
 * Two sockets joined into one byte stream, as a TCP proxy carries it: what one side sends
 * is written to the other; a side that cannot take more pauses the reading of the side
 * sending to it until it drains; a side's FIN (half-close) is passed on once its bytes
 * are, so a client may end its request and still read the answer; a reset is passed on
 * as a reset; a stream that carries nothing either way for the idle time is closed, and
 * one that reaches its longest life is reset.
 * A side that is another sidecar speaks frames (frames.ts): its direction ends with an
 * END frame, and one that closes without it was cut, which is passed on as a reset.
 * The sockets must be opened with `allowHalfOpen`, or the runtime would close a side at
 * its FIN.
 */
import type { Socket } from "bun";
import { writeQueued } from "../transport/write-queue.ts";
import { dataFrames, END_FRAME, FRAME_HEADER_BYTES, FrameReader, MAX_FRAME_PAYLOAD, writeHeader } from "./frames.ts";

/** The scratch buffer frames are built in: a socket read's size, grown for a larger one. */
const SCRATCH_BYTES = 64 * 1024 + FRAME_HEADER_BYTES;
/** One for every pipe of the process, not one per connection: a frame is built and written in one go. */
let scratch = Buffer.allocUnsafe(SCRATCH_BYTES);

/** 0: the client's side (the one that connected first); 1: the upstream side. */
export type Side = 0 | 1;

/** How the stream ended. */
export interface PipeReport {
  /** Bytes read from the client's side and from the upstream side (payload, without frame headers). */
  fromClient: number;
  fromUpstream: number;
  /**
   * Undefined when both sides closed in order; otherwise why not ("cut": a sidecar's
   * direction closed without END; "max-duration": it lasted its longest; "drain": a side
   * kept its half open past a drain's FIN).
   */
  error: "reset" | "idle" | "cut" | "malformed" | "max-duration" | "drain" | undefined;
}

/** A carried connection's time limits, in ms (a DestinationPolicy's); 0: none. */
export interface TcpTimeouts {
  /** Longest it may carry nothing either way. */
  tcpIdle: number;
  /** Longest it may last. */
  tcpMaxDuration: number;
}

export class TcpPipe {
  /** Bytes waiting for each side's socket, which took less than it was given. */
  private readonly queues: [Uint8Array[], Uint8Array[]] = [[], []];
  /** Each side's write half is shut (or the socket is gone): nothing more goes to it. */
  private readonly shut = [false, false];
  /** A framed side's END is queued behind its bytes: its write half shuts once they drain. */
  private readonly shutAfterDrain = [false, false];
  /** Each side's direction is over: its FIN (or END frame) came, or it closed. */
  private readonly ended = [false, false];
  private readonly closed = [false, false];
  private readonly bytes: [number, number] = [0, 0];
  /** The frame reader of each side that is a sidecar. */
  private readonly readers: [FrameReader | undefined, FrameReader | undefined];
  private lastActive = performance.now();
  private error: PipeReport["error"];
  private reported = false;
  private readonly idleMs: number;
  /** Resets both sides at the longest the connection may last, or a drain's grace after its FIN. */
  private lifetime: Timer | undefined;

  constructor(
    private readonly socks: [Socket<unknown>, Socket<unknown>],
    /** Which sides are sidecars speaking frames. */
    private readonly framed: readonly [boolean, boolean],
    timeouts: TcpTimeouts,
    private readonly onEnd: (report: PipeReport) => void,
  ) {
    const idleMs = (this.idleMs = timeouts.tcpIdle);
    // A reset, as for a cut stream: an application protocol must not read a cut-off answer as a whole one.
    if (timeouts.tcpMaxDuration > 0) this.lifetime = setTimeout(() => this.abort("max-duration"), timeouts.tcpMaxDuration);
    this.readers = [framed[0] ? this.readerFor(0) : undefined, framed[1] ? this.readerFor(1) : undefined];
    // 0: never idle, so a timer a listener armed before the join is disarmed too.
    for (const s of socks) {
      if (idleMs > 0) this.armIdle(s, idleMs);
      else s.timeout(0);
    }
  }

  /** Bytes read from `side`'s socket. */
  data(side: Side, chunk: Uint8Array): void {
    this.lastActive = performance.now();
    const reader = this.readers[side];
    if (reader !== undefined) reader.push(chunk);
    else this.payload(side, chunk, 0, chunk.byteLength);
  }

  /** `side` can take bytes again. */
  drain(side: Side): void {
    if (!writeQueued(this.socks[side], this.queues[side])) return;
    if (this.shutAfterDrain[side]) {
      this.shutAfterDrain[side] = false;
      this.socks[side].shutdown();
    }
    const from = (1 - side) as Side;
    if (!this.closed[from]) this.socks[from].resume();
    if (this.ended[from]) this.shutWrite(side);
  }

  /** `side`'s socket got a FIN. From a sidecar it must have come after END, or the direction was cut. */
  end(side: Side): void {
    if (this.readers[side] !== undefined) {
      if (!this.readers[side]!.sawEnd) this.abort("cut");
      return;
    }
    this.directionOver(side);
  }

  /** `side`'s socket closed; `err`: it was reset or failed. */
  close(side: Side, err?: Error): void {
    if (this.closed[side]) return;
    this.closed[side] = true;
    this.shut[side] = true;
    this.queues[side].length = 0;
    const other = (1 - side) as Side;
    const cut = this.readers[side] !== undefined && !this.readers[side]!.sawEnd;
    if (err !== undefined || cut) {
      // A reset, a failure or a cut stream is passed on as a reset, as a TCP proxy does.
      this.error ??= err !== undefined ? "reset" : "cut";
      if (!this.closed[other]) this.socks[other].terminate();
    } else {
      this.ended[side] = true;
      if (this.queues[other].length === 0) this.shutWrite(other);
    }
    if (this.closed[other]) this.report();
  }

  /** A side's idle timer fired: closes both if nothing moved for the idle time, else re-arms it. */
  timeout(side: Side): void {
    if (this.idleMs <= 0) return;
    const quiet = performance.now() - this.lastActive;
    if (quiet < this.idleMs) return this.armIdle(this.socks[side], this.idleMs - quiet);
    this.abort("idle");
  }

  /**
   * Ends both sides gracefully (a drain's end): queued bytes are dropped, and each side
   * gets a FIN. A side that keeps its half open `graceMs` later is reset: the process
   * must be able to exit.
   */
  shutdown(graceMs: number): void {
    for (const side of [0, 1] as const) {
      this.queues[side].length = 0;
      this.shutWrite(side);
    }
    clearTimeout(this.lifetime);
    this.lifetime = setTimeout(() => this.abort("drain"), graceMs);
  }

  /** Payload bytes from `side`, chunk[start..end), for the other side. */
  private payload(side: Side, chunk: Uint8Array, start: number, end: number): void {
    const length = end - start;
    this.bytes[side] += length;
    const to = (1 - side) as Side;
    // Bytes for a side that is gone: as TCP answers them, with a reset.
    if (this.closed[to]) return this.socks[side].terminate();
    if (this.shut[to] || length === 0) return;
    let out = chunk;
    if (this.framed[to]) {
      out = this.frame(chunk, start, end);
      start = 0;
      end = length + FRAME_HEADER_BYTES;
    }
    const queue = this.queues[to];
    if (queue.length === 0) {
      // Written by range, not as a view (FrameEvents.data says why).
      const n = this.socks[to].write(out, start, end - start);
      if (n >= end - start) return;
      start += Math.max(n, 0);
    }
    // What waits must not be the scratch buffer, which the next frame reuses.
    queue.push(out === scratch ? Buffer.from(out.subarray(start, end)) : out.subarray(start, end));
    this.socks[side].pause();
  }

  /**
   * chunk[start..end) as one DATA frame, in the scratch buffer every frame reuses: the
   * socket copies what it takes, so a frame taken whole leaves nothing allocated (a bulk
   * transfer would otherwise make a buffer per read for the collector).
   */
  private frame(chunk: Uint8Array, start: number, end: number): Uint8Array {
    const length = end - start;
    if (length > MAX_FRAME_PAYLOAD) return dataFrames(chunk.subarray(start, end));
    if (scratch.byteLength < length + FRAME_HEADER_BYTES) scratch = Buffer.allocUnsafe(length + FRAME_HEADER_BYTES);
    writeHeader(scratch, 0, length);
    // By range: no view of the read (FrameEvents.data says why).
    Buffer.prototype.copy.call(chunk, scratch, FRAME_HEADER_BYTES, start, end);
    return scratch;
  }

  /** `side` will send no more: once what it sent is written on, the other side gets its FIN. */
  private directionOver(side: Side): void {
    this.ended[side] = true;
    const to = (1 - side) as Side;
    if (this.queues[to].length === 0) this.shutWrite(to);
  }

  private shutWrite(side: Side): void {
    if (this.shut[side]) return;
    this.shut[side] = true;
    if (this.framed[side] && !writeQueued(this.socks[side], this.queues[side], END_FRAME)) {
      this.shutAfterDrain[side] = true;
      return;
    }
    // Our FIN. Bun's end() stops reading a plain socket too (measured), so while the side may still send, shutdown() alone.
    if (this.ended[side]) this.socks[side].end();
    else this.socks[side].shutdown();
  }

  private readerFor(side: Side): FrameReader {
    return new FrameReader({
      data: (chunk, start, end) => this.payload(side, chunk, start, end),
      end: () => this.directionOver(side),
      malformed: () => this.abort("malformed"),
    });
  }

  /** Resets both sides. */
  private abort(why: NonNullable<PipeReport["error"]>): void {
    this.error ??= why;
    // Nothing more goes to either side: terminate() runs the socket's close handler at once, with no error, and
    // close() would pass a plain side's close on as an orderly end (a FIN, or an END frame the callee's sidecar
    // turns into its service's FIN) to the side not reset yet, which could take a cut-off stream for a whole one.
    this.shut[0] = this.shut[1] = true;
    for (const s of this.socks) s.terminate();
  }

  private armIdle(sock: Socket<unknown>, ms: number): void {
    sock.timeout(Math.max(1, Math.ceil(ms / 1000)));
  }

  private report(): void {
    if (this.reported) return;
    this.reported = true;
    clearTimeout(this.lifetime);
    this.onEnd({ fromClient: this.bytes[0]!, fromUpstream: this.bytes[1]!, error: this.error });
  }
}
