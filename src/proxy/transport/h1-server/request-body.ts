/**
 * A request body as it arrives on the downstream connection, pushed to the upstream
 * exchange that pumps it (BodySource). The framing is decoded here (Content-Length
 * counted, chunked decoded strictly) and re-applied by the pump, so the upstream gets
 * exactly the body, never bytes of the next request. Backpressure: while the upstream
 * socket is full, or nobody pumps yet and a little is buffered, the downstream socket
 * is paused.
 */
import { ChunkedDecoder } from "../h1/chunked.ts";
import { RequestBodyError } from "../h1/errors.ts";
import { chunkFrame, type BodySource, type RequestSink } from "../h1/request-body.ts";
import type { RequestFraming } from "../h1/request-head.ts";

/** What the body needs from its downstream connection. */
export interface BodyReader {
  pauseReading(): void;
  resumeReading(): void;
}

/** Body bytes kept until a pump takes them: buf[start..end) of the read they arrived in. */
interface Piece {
  buf: Uint8Array;
  start: number;
  end: number;
}

/** Buffered before a pump starts (the upstream connection is still being opened). */
const PREBUFFER_BYTES = 64 * 1024;
/**
 * Early pieces kept as ranges of their reads; past these, pieces are copied together into
 * buffers of EARLY_COPY_BYTES. A body sent in tiny pieces (a mux peer's one-byte frames,
 * each a view of a slab or read) would otherwise keep a piece, and all it is a view of, per
 * byte: what waits for a pump must cost about its own size.
 */
const EARLY_PIECES_AS_READ = 8;
const EARLY_COPY_BYTES = 16 * 1024;
/** The most of a body left unread after its response that is read and dropped to keep the connection (nginx drains, too). */
const MAX_DISCARD_BYTES = 64 * 1024;

/** A copy of a body taken as it arrives (a mirror's): whole once the body is, or lost. */
class BodyCopy {
  private readonly pieces: Buffer[] = [];
  private size = 0;
  /** Set once the copy is whole or lost: it takes nothing more. */
  private over = false;

  constructor(
    private readonly limit: number,
    private readonly whole: (body: Buffer) => void,
    private readonly lost: () => void,
  ) {}

  add(buf: Uint8Array, start: number, end: number): void {
    if (this.over) return;
    this.size += end - start;
    if (this.size > this.limit) return this.lose();
    this.pieces.push(Buffer.from(buf.subarray(start, end)));
  }

  complete(): void {
    if (this.over) return;
    this.over = true;
    this.whole(Buffer.concat(this.pieces, this.size));
  }

  lose(): void {
    if (this.over) return;
    this.over = true;
    this.pieces.length = 0;
    this.lost();
  }
}

export class DownstreamBody implements BodySource {
  /** The whole body arrived. */
  done = false;
  /** HTTP status to answer with when the body failed before a response started (400, 413). */
  failStatus = 0;
  private remaining: number;
  private readonly decoder: ChunkedDecoder | undefined;
  private received = 0;
  private error: RequestBodyError | undefined;
  /** Pieces that arrived before a pump started (unframed), as ranges of the reads they came in. */
  private early: Piece[] = [];
  private earlyBytes = 0;
  /** Where early pieces past EARLY_PIECES_AS_READ are copied; written front to back, never again. */
  private earlyCopy: Buffer | undefined;
  private pausedEarly = false;
  /** Framed pieces waiting for the upstream socket to drain. */
  private waiting: Uint8Array[] = [];
  private sink: RequestSink | undefined;
  private framing: RequestFraming | undefined;
  private blocked = false;
  private settle: ((complete: boolean) => void) | undefined;
  private fault: ((err: Error) => void) | undefined;
  private pumped = false;
  /** The response is over: the rest of the body is counted and dropped. */
  private discarding = false;
  /** A mirror's copy, taken as the body arrives (copyAsItComes). */
  private copy: BodyCopy | undefined;

  constructor(
    private readonly reader: BodyReader,
    contentLength: number,
    chunked: boolean,
    private readonly maxBytes: number,
  ) {
    this.remaining = chunked ? -1 : contentLength;
    this.decoder = chunked ? new ChunkedDecoder() : undefined;
  }

  /**
   * Takes what belongs to the body from `chunk[start..end)`; returns how many bytes it
   * used (the rest is the next request). A length-framed body is kept as ranges of the
   * read, not views of it: a view would make JSC materialize the read's ArrayBuffer.
   */
  feed(chunk: Uint8Array, start = 0, end = chunk.byteLength): number {
    if (this.done || this.error) return 0;
    if (this.decoder === undefined) {
      const take = Math.min(this.remaining, end - start);
      this.remaining -= take;
      this.accept(chunk, start, start + take);
      if (this.remaining === 0) this.finish();
      return take;
    }
    let used: number;
    try {
      used = this.decoder.push(start === 0 && end === chunk.byteLength ? chunk : chunk.subarray(start, end), this.acceptDecoded);
    } catch (err) {
      this.fail(new RequestBodyError(`malformed chunked request body: ${(err as Error).message}`), 400);
      return end - start;
    }
    if (this.decoder.done) this.finish();
    return used;
  }

  /** The downstream went away or broke the body: the upstream must see it fail, never end. */
  fail(err: RequestBodyError, status = 400): void {
    if (this.done || this.error) return;
    this.copy?.lose();
    this.error = err;
    this.failStatus = status;
    this.early = [];
    this.waiting = [];
    const fault = this.fault;
    this.fault = this.settle = undefined;
    fault?.(err);
  }

  get failed(): boolean {
    return this.error !== undefined;
  }

  /** What is left can be read and dropped: a Content-Length body, not failed, with little left. */
  get discardable(): boolean {
    return !this.done && this.error === undefined && this.remaining >= 0 && this.remaining <= MAX_DISCARD_BYTES;
  }

  /** Nobody wants the rest: read it to its end and drop it, and let the connection read again. */
  discard(): void {
    this.copy?.lose();
    this.discarding = true;
    this.early = [];
    this.waiting = [];
    this.abandoned();
    if (this.pausedEarly) {
      this.pausedEarly = false;
      this.reader.resumeReading();
    }
    if (this.blocked) {
      this.blocked = false;
      this.reader.resumeReading();
    }
  }

  /** A copy of the whole body when all of it, at most `limit` bytes, is here and none of it was taken yet (a mirror's); otherwise undefined. */
  copyWhole(limit: number): Buffer | undefined {
    if (!this.done || this.error || this.pumped || this.earlyBytes > limit) return undefined;
    return this.copyEarly(Buffer.allocUnsafe(this.earlyBytes), 0);
  }

  /**
   * Copies the body as it arrives, from what is here now, when none of it was taken yet
   * and it is still coming (a mirror's; copyWhole serves a body that is here whole):
   * `whole` gets the copy once the body is complete within `limit` bytes, `lost` is told
   * once it cannot be (past the limit, failed, or dropped). Each runs once, as a task of
   * its own. False, and neither runs, when copying cannot start.
   */
  copyAsItComes(limit: number, whole: (body: Buffer) => void, lost: () => void): boolean {
    if (this.done || this.error || this.pumped || this.discarding || this.copy !== undefined || this.earlyBytes > limit) return false;
    // Told later, never from inside the read that completes the body.
    this.copy = new BodyCopy(limit, (body) => queueMicrotask(() => whole(body)), () => queueMicrotask(lost));
    for (const piece of this.early) this.copy.add(piece.buf, piece.start, piece.end);
    return true;
  }

  /** The pieces held before a pump, copied into `out` from `at`; `out` returned. */
  private copyEarly(out: Buffer, at: number): Buffer {
    for (const piece of this.early) at += Buffer.prototype.copy.call(piece.buf, out, at, piece.start, piece.end);
    return out;
  }

  takeWhole(length: number, room: number): Buffer | undefined {
    // Under PREBUFFER_BYTES reading was never paused for it, so nothing needs resuming.
    if (!this.done || this.error || this.pumped || this.earlyBytes !== length || length >= PREBUFFER_BYTES) return undefined;
    this.pumped = true;
    const out = this.copyEarly(Buffer.allocUnsafe(room + length), room);
    this.early = [];
    this.earlyBytes = 0;
    return out;
  }

  pump(framing: RequestFraming, sink: RequestSink): Promise<boolean> {
    if (this.pumped) return Promise.reject(new RequestBodyError("the request body was already sent once"));
    this.pumped = true;
    if (this.error) return Promise.reject(this.error);
    this.sink = sink;
    this.framing = framing;
    return new Promise<boolean>((resolve, reject) => {
      this.settle = resolve;
      this.fault = reject;
      const pieces = this.early;
      this.early = [];
      this.earlyBytes = 0;
      this.earlyCopy = undefined;
      for (const piece of pieces) this.send(piece.buf, piece.start, piece.end);
      if (this.pausedEarly) {
        this.pausedEarly = false;
        this.reader.resumeReading();
      }
      if (this.done && !this.blocked) this.complete();
    });
  }

  /** Pieces the chunked decoder hands out (views: decoding makes them anyway). */
  private readonly acceptDecoded = (data: Uint8Array): void => this.accept(data, 0, data.byteLength);

  private accept(buf: Uint8Array, start: number, end: number): void {
    const n = end - start;
    if (n === 0 || this.error || this.discarding) return;
    this.received += n;
    if (this.received > this.maxBytes) {
      this.fail(new RequestBodyError(`request body larger than the limit of ${this.maxBytes} bytes`), 413);
      return;
    }
    if (this.copy !== undefined) this.copy.add(buf, start, end);
    if (this.sink === undefined) {
      // Each socket read is a fresh buffer (a mux stream's, a slab never written twice): keeping a range of it is safe.
      this.keepEarly(buf, start, end);
      this.earlyBytes += n;
      if (this.earlyBytes >= PREBUFFER_BYTES && !this.pausedEarly) {
        this.pausedEarly = true;
        this.reader.pauseReading();
      }
      return;
    }
    this.send(buf, start, end);
  }

  private keepEarly(buf: Uint8Array, start: number, end: number): void {
    if (this.early.length < EARLY_PIECES_AS_READ) return void this.early.push({ buf, start, end });
    const n = end - start;
    const last = this.early[this.early.length - 1]!;
    if (last.buf !== this.earlyCopy || last.end + n > last.buf.byteLength) {
      this.earlyCopy = Buffer.allocUnsafe(Math.max(n, EARLY_COPY_BYTES));
      this.early.push({ buf: this.earlyCopy, start: 0, end: 0 });
    }
    const into = this.early[this.early.length - 1]!;
    Buffer.prototype.copy.call(buf, into.buf, into.end, start, end);
    into.end += n;
  }

  private send(buf: Uint8Array, start: number, end: number): void {
    const sink = this.sink!;
    if (!sink.live()) return this.abandoned();
    if (this.framing!.kind === "chunked") {
      buf = chunkFrame(start === 0 && end === buf.byteLength ? buf : buf.subarray(start, end));
      start = 0;
      end = buf.byteLength;
    }
    // While the socket is full, pieces decoded from what was already read wait in order.
    if (this.blocked) {
      this.waiting.push(start === 0 && end === buf.byteLength ? buf : buf.subarray(start, end));
      return;
    }
    if (!sink.write(buf, start, end)) this.block(sink);
  }

  /** Waits for the upstream socket to drain, then writes what queued meanwhile. */
  private block(sink: RequestSink): void {
    this.blocked = true;
    this.reader.pauseReading();
    void sink.drained().then((ok) => {
      if (!ok) return this.abandoned();
      const queued = this.waiting;
      this.waiting = [];
      for (let i = 0; i < queued.length; i++) {
        if (sink.write(queued[i]!)) continue;
        this.waiting = queued.slice(i + 1);
        // Still blocked and still paused: wait for the next drain.
        this.reader.resumeReading();
        return this.block(sink);
      }
      this.blocked = false;
      if (this.done) this.complete();
      else this.reader.resumeReading();
    });
  }

  private finish(): void {
    this.done = true;
    this.copy?.complete();
    if (this.sink !== undefined && !this.blocked) this.complete();
  }

  /** Everything went out (once the socket took it): end the chunked coding, report success. */
  private complete(): void {
    const settle = this.settle;
    if (settle === undefined) return;
    this.settle = this.fault = undefined;
    if (this.framing!.kind === "chunked" && !this.sink!.write("0\r\n\r\n")) {
      void this.sink!.drained().then(settle);
      return;
    }
    settle(true);
  }

  /** The upstream exchange is over (failed or answered early): nobody reads the rest. */
  private abandoned(): void {
    const settle = this.settle;
    this.settle = this.fault = undefined;
    settle?.(false);
  }
}
