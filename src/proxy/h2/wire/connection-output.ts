/**
 * The sending half of one HTTP/2 connection (connection.ts reads and holds the peer to the
 * protocol): header blocks and bodies sent, bodies within the peer's windows, and every
 * frame a turn writes sent in one socket write at its end; replies a peer is owed while it
 * reads nothing capped (CVE-2019-9512, -9515); the connection ended, after a GOAWAY when
 * it fails. Nothing here judges what the peer sent. A base class of H2Connection, not an
 * object of its own: no second object per connection, no extra step on a frame's way out.
 */
import { holdToEndOfTurn, type HeldWrite } from "../../transport/turn-writes.ts";
import { HpackEncoder } from "./hpack.ts";
import { DEFAULT_MAX_FRAME, DEFAULT_WINDOW, ErrorCode, Flag, FrameOutput, FrameType } from "./frames.ts";
import type { WireStream } from "./wire-stream.ts";

/** Replies (PING and SETTINGS acknowledgements, resets) a peer may be owed while it reads nothing. */
const MAX_OWED_WHILE_BLOCKED = 10_000;

export abstract class H2ConnectionOutput implements HeldWrite {
  private readonly encoder = new HpackEncoder();
  protected readonly out = new FrameOutput();
  private held = false;
  /** Streams with body queued past a window: sent as WINDOW_UPDATEs arrive. */
  protected readonly windowBlocked = new Set<WireStream>();
  protected sendWindow = DEFAULT_WINDOW;
  protected peerMaxFrame = DEFAULT_MAX_FRAME;
  /** The socket took less than it was given: writes report false until it drains. */
  blocked = false;
  private owed = 0;
  /** The connection is over: nothing more is read or written. */
  protected over = false;

  // ---- what a side provides ----

  /** Every open stream. */
  protected abstract eachStream(visit: (stream: WireStream) => void): void;
  /** The last stream id this side took or opened, for a GOAWAY. */
  protected abstract get lastStreamId(): number;
  /** Sends buf[0, length); false when the socket queued some of it. */
  protected abstract writeOut(buf: Buffer, length: number): boolean;
  /** The connection failed: every stream is told so. */
  protected abstract streamsGone(): void;
  /** Ends the transport: `reset` when the peer reads nothing and would never get the rest. */
  protected abstract closeTransport(reset: boolean): void;

  // ---- writing ----

  /** A header block in HEADERS and, past the peer's frame size, CONTINUATION frames. */
  sendHeaders(id: number, fields: readonly string[], endStream: boolean): void {
    const block = this.encoder.encode(fields);
    const max = this.peerMaxFrame;
    let at = Math.min(block.byteLength, max);
    this.out.header(at, FrameType.HEADERS, (endStream ? Flag.END_STREAM : 0) | (at === block.byteLength ? Flag.END_HEADERS : 0), id);
    this.out.bytes(block, 0, at);
    while (at < block.byteLength) {
      const n = Math.min(block.byteLength - at, max);
      this.out.header(n, FrameType.CONTINUATION, at + n === block.byteLength ? Flag.END_HEADERS : 0, id);
      this.out.bytes(block, at, at + n);
      at += n;
    }
    this.hold();
  }

  /** Sends what the windows allow of the stream's queued body, and its end once it is all out; true when nothing is left. */
  flushStream(stream: WireStream): boolean {
    const queue = stream.queued;
    this.hold();
    while (queue.length > 0) {
      const chunk = queue[0]!;
      const room = Math.min(stream.sendWindow, this.sendWindow, this.peerMaxFrame);
      if (room <= 0) {
        this.windowBlocked.add(stream);
        return false;
      }
      const n = Math.min(room, chunk.byteLength);
      const endsHere = n === chunk.byteLength && queue.length === 1 && stream.endQueued && stream.trailers === undefined;
      this.out.header(n, FrameType.DATA, endsHere ? Flag.END_STREAM : 0, stream.id);
      this.out.bytes(chunk, 0, n);
      stream.sendWindow -= n;
      this.sendWindow -= n;
      stream.queuedBytes -= n;
      if (n === chunk.byteLength) queue.shift();
      else queue[0] = chunk.subarray(n);
      if (endsHere) {
        this.windowBlocked.delete(stream);
        stream.sendDone();
        return true;
      }
    }
    this.windowBlocked.delete(stream);
    if (stream.endQueued) {
      if (stream.trailers !== undefined) this.sendHeaders(stream.id, stream.trailers, true);
      else this.out.header(0, FrameType.DATA, Flag.END_STREAM, stream.id);
      stream.sendDone();
    }
    return true;
  }

  protected flushBlocked(): void {
    for (const stream of [...this.windowBlocked]) {
      if (this.sendWindow <= 0) return;
      if (this.flushStream(stream)) stream.onDrain();
    }
  }

  sendRst(id: number, code: number): void {
    this.owe();
    this.out.header(4, FrameType.RST_STREAM, 0, id);
    this.out.u32(code);
    this.hold();
  }

  protected windowUpdate(id: number, increment: number): void {
    this.out.header(4, FrameType.WINDOW_UPDATE, 0, id);
    this.out.u32(increment);
    this.hold();
  }

  /** GOAWAY naming the last stream this side took, with `why` as its debug data (RFC 9113 §6.8), which clients such as nghttp print. */
  protected goaway(lastStreamId: number, code: ErrorCode, why = ""): void {
    const debug = Buffer.from(why, "latin1");
    this.out.header(8 + debug.byteLength, FrameType.GOAWAY, 0, 0);
    this.out.u32(lastStreamId);
    this.out.u32(code);
    this.out.bytes(debug, 0, debug.byteLength);
    this.hold();
  }

  /** The stream is over: it waits for no window any more. */
  protected forget(stream: WireStream): void {
    this.windowBlocked.delete(stream);
  }

  protected hold(): void {
    if (this.held || this.over) return;
    this.held = true;
    holdToEndOfTurn(this);
  }

  flushHeld(): void {
    this.held = false;
    if (this.out.length === 0 || this.over) return;
    const taken = this.writeOut(this.out.written, this.out.length);
    this.out.clear();
    if (!taken) this.blocked = true;
  }

  /** A reply is owed the peer: one too many while it reads nothing ends the connection. */
  protected owe(): void {
    if (this.blocked && ++this.owed > MAX_OWED_WHILE_BLOCKED) this.fail(ErrorCode.ENHANCE_YOUR_CALM, "a flood of frames owing replies, none of them read");
  }

  /** The socket drained: streams that were told to wait for it may write. */
  protected socketDrained(): void {
    if (!this.blocked) return;
    this.blocked = false;
    this.owed = 0;
    this.eachStream((stream) => {
      if (!this.windowBlocked.has(stream)) stream.onDrain();
    });
  }

  /** A connection error (RFC 9113 §5.4.1): GOAWAY with its code, every stream gone, the connection ended. */
  protected fail(code: ErrorCode, why: string): void {
    if (this.over) return;
    this.goaway(this.lastStreamId, code, why);
    this.streamsGone();
    this.end();
  }

  /** Ends the connection once what was written is sent; at once, as a reset, for a peer that reads nothing (it would never be). */
  protected end(): void {
    this.flushHeld();
    this.over = true;
    this.closeTransport(this.blocked);
  }
}
