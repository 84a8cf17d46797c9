/**
 * The bytes between two sidecars after mesh-tcp/1's answer byte, as frames: a four-byte
 * header (the type, then the payload's length in 24 bits, big-endian) and the payload.
 * DATA carries the stream's bytes; END says the sender's direction is over, its FIN. The
 * TLS connection's own end cannot say that: Bun reports a FIN that came without TLS
 * close_notify (a sidecar killed, or a FIN injected on the path) as an ordinary end, so a
 * stream cut short would look complete. A direction that closes without END was cut.
 */
export const FRAME_HEADER_BYTES = 4;
/** The largest payload a header can give. */
export const MAX_FRAME_PAYLOAD = 0xffffff;

const DATA = 0;
const END = 1;

/** The END frame. */
export const END_FRAME = new Uint8Array([END, 0, 0, 0]);

/** `chunk` as DATA frames, in one buffer (one TLS record where it fits: a header written apart would be a record of its own). */
export function dataFrames(chunk: Uint8Array): Uint8Array {
  const count = Math.max(1, Math.ceil(chunk.byteLength / MAX_FRAME_PAYLOAD));
  // Every byte is written below: no need to zero it first (small ones come from the runtime's pool).
  const out = Buffer.allocUnsafe(chunk.byteLength + count * FRAME_HEADER_BYTES);
  // One frame, the case of every socket read: the chunk is copied whole, with no view of it made.
  if (count === 1) {
    writeHeader(out, 0, chunk.byteLength);
    out.set(chunk, FRAME_HEADER_BYTES);
    return out;
  }
  let at = 0;
  for (let from = 0; from < chunk.byteLength; from += MAX_FRAME_PAYLOAD) {
    const piece = chunk.subarray(from, Math.min(from + MAX_FRAME_PAYLOAD, chunk.byteLength));
    writeHeader(out, at, piece.byteLength);
    out.set(piece, at + FRAME_HEADER_BYTES);
    at += FRAME_HEADER_BYTES + piece.byteLength;
  }
  return out;
}

/** A DATA frame's header for `length` payload bytes, at `out[at]`. */
export function writeHeader(out: Uint8Array, at: number, length: number): void {
  out[at] = DATA;
  out[at + 1] = length >>> 16;
  out[at + 2] = (length >>> 8) & 0xff;
  out[at + 3] = length & 0xff;
}

export interface FrameEvents {
  /** Payload bytes: chunk[start..end). A range, not a view: a view of a socket read makes the engine materialize its buffer. */
  data(chunk: Uint8Array, start: number, end: number): void;
  end(): void;
  /** Not mesh-tcp/1: a type no version knows, DATA after END, or an empty DATA frame. */
  malformed(reason: string): void;
}

/**
 * Payloads shorter than this, several in one read, are gathered and handed on as one: a
 * peer's one-byte frames would otherwise cost a write each to the service. Larger ones go
 * as they are, a write each being no more than a plain TCP stream of such reads costs.
 */
const GATHER_BELOW = 1024;

/**
 * Reads frames from a byte stream cut anywhere; payloads are ranges of the reads, copied
 * only when several small ones come in one read (GATHER_BELOW).
 */
export class FrameReader {
  private readonly header = new Uint8Array(FRAME_HEADER_BYTES);
  private headerHave = 0;
  /** Payload bytes of the current DATA frame still to come. */
  private remaining = 0;
  private ended = false;
  private broken = false;
  /** This read's first small payload, held in case more come: read[heldStart..heldEnd). */
  private held: Uint8Array | undefined;
  private heldStart = 0;
  private heldEnd = 0;
  /** Small payloads of this read gathered once a second came; a buffer of their own, since the receiver may keep it. */
  private gathered: Buffer | undefined;
  private gatheredLength = 0;

  constructor(private readonly events: FrameEvents) {}

  /** The END frame was read. */
  get sawEnd(): boolean {
    return this.ended;
  }

  push(chunk: Uint8Array): void {
    let at = 0;
    while (at < chunk.byteLength && !this.broken) {
      if (this.remaining > 0) {
        const n = Math.min(this.remaining, chunk.byteLength - at);
        this.remaining -= n;
        this.payload(chunk, at, at + n);
        at += n;
        continue;
      }
      // A header byte at a time: no view of the read (see FrameEvents.data).
      while (this.headerHave < FRAME_HEADER_BYTES && at < chunk.byteLength) this.header[this.headerHave++] = chunk[at++]!;
      if (this.headerHave === FRAME_HEADER_BYTES) this.frame();
    }
    this.handOn();
  }

  private payload(chunk: Uint8Array, start: number, end: number): void {
    const n = end - start;
    if (n >= GATHER_BELOW) {
      this.handOn();
      return this.events.data(chunk, start, end);
    }
    if (this.gathered !== undefined) {
      Buffer.prototype.copy.call(chunk, this.gathered, this.gatheredLength, start, end);
      this.gatheredLength += n;
    } else if (this.held !== undefined) {
      // A second small payload in this read: both, and any after, are gathered (no more than the read holds).
      const gathered = (this.gathered = Buffer.allocUnsafe(chunk.byteLength));
      Buffer.prototype.copy.call(this.held, gathered, 0, this.heldStart, this.heldEnd);
      Buffer.prototype.copy.call(chunk, gathered, this.heldEnd - this.heldStart, start, end);
      this.gatheredLength = this.heldEnd - this.heldStart + n;
      this.held = undefined;
    } else {
      this.held = chunk;
      this.heldStart = start;
      this.heldEnd = end;
    }
  }

  /** Hands on what this read's small payloads left waiting: before anything else is told, and at the read's end. */
  private handOn(): void {
    if (this.gathered !== undefined) {
      const gathered = this.gathered;
      this.gathered = undefined;
      this.events.data(gathered, 0, this.gatheredLength);
    } else if (this.held !== undefined) {
      const held = this.held;
      this.held = undefined;
      this.events.data(held, this.heldStart, this.heldEnd);
    }
  }

  private frame(): void {
    this.headerHave = 0;
    const h = this.header;
    const length = (h[1]! << 16) | (h[2]! << 8) | h[3]!;
    if (this.ended) return this.fail("a frame after END");
    if (h[0] === END && length === 0) {
      this.ended = true;
      this.handOn();
      return this.events.end();
    }
    if (h[0] !== DATA) return this.fail(`frame type ${h[0]}`);
    if (length === 0) return this.fail("an empty DATA frame");
    this.remaining = length;
  }

  private fail(reason: string): void {
    this.broken = true;
    this.handOn();
    this.events.malformed(reason);
  }
}
