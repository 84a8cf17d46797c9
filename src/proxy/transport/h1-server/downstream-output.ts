/**
 * The writing half of a downstream HTTP/1.1 connection (connection.ts reads requests and
 * dispatches them): bytes go to the client at once, held to the end of the turn, or
 * queued in order behind what the socket did not take; the connection ends with a FIN
 * once the queue is written, or with a reset. A base class of ServerConnection, not an
 * object of its own: no second object per connection, no extra step per write.
 */
import type { ByteSocket } from "../byte-socket.ts";
import { holdToEndOfTurn, type HeldWrite } from "../turn-writes.ts";

/** A copy of data[start..end), not a view (Buffer#slice is one): the caller may reuse `data`. */
function copyOf(data: Uint8Array, start: number, end: number): Uint8Array {
  const out = Buffer.allocUnsafe(end - start);
  Buffer.prototype.copy.call(data, out, 0, start, end);
  return out;
}

export abstract class DownstreamOutput implements HeldWrite {
  /** What the socket did not take yet, in order: written as it drains. */
  protected out: (string | Uint8Array)[] = [];
  /** A write held to the end of the turn (writeLater): held[heldStart..heldEnd). */
  protected held: Uint8Array | undefined;
  private heldStart = 0;
  private heldEnd = 0;
  protected closed = false;
  /** End (FIN) once `out` is written. */
  protected endWhenFlushed = false;

  constructor(readonly socket: ByteSocket) {}

  /** The connection closed, either way: what it holds is let go of. */
  protected abstract finish(): void;

  /**
   * Writes data[start..end), bytes nobody writes to again (an upstream's read), at the end
   * of the turn on a raw socket (turn-writes.ts); at once when something is queued or held.
   */
  writeLater(data: Uint8Array, start: number, end: number): boolean {
    if (this.socket.batchesWrites || this.closed || this.out.length > 0 || this.held !== undefined) return this.write(data, start, end);
    this.held = data;
    this.heldStart = start;
    this.heldEnd = end;
    holdToEndOfTurn(this);
    return true;
  }

  flushHeld(): void {
    const data = this.held;
    if (data === undefined) return;
    this.held = undefined;
    this.write(data, this.heldStart, this.heldEnd);
  }

  /**
   * Of a Uint8Array, bytes [start, end) go out: a view per write would cost JSC an
   * allocation. What the socket does not take is copied, so the caller may reuse `data`
   * once this returns (relay-head.ts builds heads in one shared buffer).
   */
  write(data: string | Uint8Array, start = 0, end?: number): boolean {
    if (this.closed) return false;
    // What was held goes first: bytes leave in the order they were written.
    if (this.held !== undefined) this.flushHeld();
    if (typeof data === "string") {
      if (this.out.length > 0) return this.queue(data);
      const n = this.socket.write(data);
      if (n === data.length) return true;
      // Strings written here are latin1-safe heads: characters are bytes.
      return n < 0 ? this.fail() : this.queue(data.slice(n));
    }
    const stop = end ?? data.byteLength;
    if (this.out.length > 0) return this.queue(copyOf(data, start, stop));
    const n = this.socket.write(data, start, stop - start);
    if (n === stop - start) return true;
    return n < 0 ? this.fail() : this.queue(copyOf(data, start + n, stop));
  }

  private queue(rest: string | Uint8Array): false {
    this.out.push(rest);
    return false;
  }

  private fail(): false {
    this.shutdown(true);
    return false;
  }

  /** The socket drained: what waits is written as far as it takes it. False while some still waits, or once the socket failed (the connection is shut). */
  protected writeQueued(): boolean {
    while (this.out.length > 0 && !this.closed) {
      const data = this.out[0]!;
      const n = this.socket.write(data);
      const len = typeof data === "string" ? data.length : data.byteLength;
      if (n === len) {
        this.out.shift();
        continue;
      }
      if (n < 0) {
        this.shutdown(true);
        return false;
      }
      this.out[0] = typeof data === "string" ? data.slice(n) : data.subarray(n);
      return false;
    }
    return true;
  }

  protected endGracefully(): void {
    this.flushHeld();
    if (this.out.length > 0) this.endWhenFlushed = true;
    else this.shutdown(false);
  }

  /** `reset`: the client must not take what it got for complete. */
  shutdown(reset: boolean): void {
    if (this.closed) return;
    this.closed = true;
    if (reset) this.socket.terminate();
    else this.socket.end();
    this.finish();
  }
}
