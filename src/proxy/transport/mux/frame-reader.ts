/**
 * The reading half of a mux session (session.ts holds the peer to the protocol): frames are
 * cut from the socket's reads, with only a header split across reads kept, and DATA
 * payloads are handed to their stream as they arrive, small pieces through the stream's
 * own slab. Nothing here judges a frame: each header goes to the session's onFrame, which
 * names the stream the DATA that follows is for. A base class of MuxSession, not an object
 * of its own as FrameWriter is: every frame of a read reaches onFrame on the same object.
 */
import { DATA, HEADER_BYTES } from "./frame.ts";
import type { MuxStream } from "./stream.ts";

/**
 * Small pieces of reads are copied into their stream's own slab, so a piece a stream keeps
 * (paused, or a body waiting for its upstream) pins only that stream's bytes, not a slab
 * other streams filled: a peer interleaving one-byte frames with other traffic would
 * otherwise pin a whole slab per byte held.
 */
const SLAB_BYTES = 16 * 1024;
const SLAB_PIECE_MAX = 2 * 1024;

export abstract class FrameReader {
  /** A live stream's frame was read since the idle timer last fired (set by the session). */
  protected stirred = false;

  /** A frame header split across reads. */
  private readonly head = Buffer.allocUnsafe(HEADER_BYTES);
  private headHave = 0;
  /** The DATA frame being read: its stream (undefined: discard) and bytes to come. */
  protected dataFor: MuxStream | undefined;
  protected dataLeft = 0;
  /**
   * The stream whose small pieces of this read are gathered in its slab, from `gatheredAt`
   * to its slabAt, and handed on as one: a peer's one-byte frames would otherwise cost a
   * write each where the stream's bytes go (the local service's socket).
   */
  private gatheredFor: MuxStream | undefined;
  private gatheredAt = 0;

  /** The session ended: the rest of a read is dropped. */
  abstract readonly closed: boolean;
  /** A frame's header; a DATA frame's handler sets dataFor and dataLeft for its payload. */
  protected abstract onFrame(type: number, flags: number, id: number, value: number): void;

  onData(chunk: Buffer): void {
    const end = chunk.byteLength;
    let at = 0;
    while (at < end && !this.closed) {
      if (this.dataLeft > 0) {
        const n = Math.min(this.dataLeft, end - at);
        this.dataLeft -= n;
        const stream = this.dataFor;
        if (stream !== undefined && stream.open) this.payload(stream, chunk, at, n);
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
        if (this.headHave < HEADER_BYTES) break;
        this.headHave = 0;
        frame = this.head;
        f = 0;
      }
      const type = frame[f]!;
      const id = frame.readUInt32BE(f + 2);
      // Gathered bytes go before any other frame's effect (a FIN, a RESET); a stream's next DATA adds to them.
      if (this.gatheredFor !== undefined && (type !== DATA || id !== this.gatheredFor.id)) this.handGathered();
      this.onFrame(type, frame[f + 1]!, id, frame.readUInt32BE(f + 6));
    }
    if (this.gatheredFor !== undefined) this.handGathered();
  }

  /**
   * A stream's bytes chunk[at..at+n). Small pieces are copied into the stream's slab,
   * gathered with the same stream's before them in this read: a view of the socket's read
   * would make JSC materialize an ArrayBuffer for every read (and sweep it after), while a
   * view of a slab is cheap. Larger ones are handed on as views, unless most of the read is
   * other bytes: a kept view would pin them all.
   */
  private payload(stream: MuxStream, chunk: Buffer, at: number, n: number): void {
    if (n <= SLAB_PIECE_MAX) {
      if (this.gatheredFor !== stream || stream.slabAt + n > SLAB_BYTES) {
        if (this.gatheredFor !== undefined) this.handGathered();
        if (stream.slab === undefined || stream.slabAt + n > SLAB_BYTES) {
          stream.slab = Buffer.allocUnsafe(SLAB_BYTES);
          stream.slabAt = 0;
        }
        this.gatheredFor = stream;
        this.gatheredAt = stream.slabAt;
      }
      chunk.copy(stream.slab!, stream.slabAt, at, at + n);
      stream.slabAt += n;
      return;
    }
    if (this.gatheredFor !== undefined) this.handGathered();
    if (n === chunk.byteLength) stream.received(chunk);
    else if (n * 2 >= chunk.byteLength) stream.received(chunk.subarray(at, at + n));
    else stream.received(Buffer.copyBytesFrom(chunk, at, n));
  }

  /** Hands the gathered bytes to their stream: a view of its slab, which is never written twice, so the stream may keep it. */
  private handGathered(): void {
    const stream = this.gatheredFor!;
    this.gatheredFor = undefined;
    if (stream.open) stream.received(stream.slab!.subarray(this.gatheredAt, stream.slabAt));
  }
}
