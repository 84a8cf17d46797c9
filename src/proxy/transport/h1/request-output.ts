/**
 * The request side of an upstream HTTP/1.1 connection (connection.ts connects, starts the
 * exchange and reads the response): a request that is all here leaves in one write, held
 * to the end of the turn on a raw socket; otherwise its head goes first and its body is
 * pumped as the socket drains. What the socket does not take waits for the drain event.
 * A base class of H1Connection, not an object of its own: no second object per
 * connection, no extra step per write.
 */
import type { ByteSocket } from "../byte-socket.ts";
import { holdToEndOfTurn, type HeldWrite } from "../turn-writes.ts";
import type { Exchange } from "./exchange.ts";
import { pumpBody, type RequestBody, type RequestSink } from "./request-body.ts";

export abstract class RequestOutput implements HeldWrite {
  protected socket: ByteSocket | undefined;
  protected ex: Exchange | undefined;
  protected isClosed = false;
  /** Bytes the socket did not take yet; written on drain. */
  protected out: string | Uint8Array | undefined;
  protected drainWaiter: ((ok: boolean) => void) | undefined;
  /** The current exchange's request, held to the end of the turn (sendWhole): held[heldStart..heldEnd). */
  protected held: string | Uint8Array | undefined;
  protected heldStart = 0;
  protected heldEnd = 0;
  private readonly sink: RequestSink;

  protected constructor() {
    this.sink = {
      write: (data, start, end) => this.write(data, start, end),
      drained: () => this.drained(),
      live: () => !this.isClosed,
    };
  }

  /** Ends the connection and the exchange on it; `reason` is what the exchange failed with (connection.ts). */
  protected abstract shutdown(reason: Error | undefined, how?: "peer" | "reset" | "end"): void;
  /** All of the request went out. */
  protected abstract requestSent(ex: Exchange): void;

  /**
   * A request that goes out in one write (its head, and its body when all of it is here),
   * held to the end of the turn on a raw socket (turn-writes.ts). Its bytes are never
   * written to again: a socket read, a string, or a buffer made for it.
   */
  protected sendWhole(ex: Exchange, data: string | Uint8Array, start: number, end: number): void {
    if (this.socket!.batchesWrites) return this.writeRequest(ex, data, start, end);
    this.held = data;
    this.heldStart = start;
    this.heldEnd = end;
    holdToEndOfTurn(this);
  }

  flushHeld(): void {
    const data = this.held;
    const ex = this.ex;
    this.held = undefined;
    // Gone with its exchange (aborted, or the connection closed) before the turn ended: nothing was sent.
    if (data !== undefined && ex !== undefined) this.writeRequest(ex, data, this.heldStart, this.heldEnd);
  }

  private writeRequest(ex: Exchange, data: string | Uint8Array, start: number, end: number): void {
    if (this.write(data, start, end)) return this.requestSent(ex);
    if (!this.isClosed) void this.sendBody(ex, null);
  }

  protected async sendBody(ex: Exchange, body: RequestBody | null): Promise<void> {
    if (this.out !== undefined && !(await this.drained())) return;
    if (body !== null) {
      let complete: boolean;
      try {
        complete = await (body instanceof ReadableStream ? pumpBody(body, ex.req.framing, this.sink) : body.pump(ex.req.framing, this.sink));
      } catch (err) {
        if (this.ex === ex) this.shutdown(err as Error);
        return;
      }
      if (!complete) return;
    }
    if (this.ex === ex) this.requestSent(ex);
  }

  /** Of a Uint8Array, bytes [start, end) go out: a view of a socket read would cost JSC an allocation. */
  protected write(data: string | Uint8Array, start = 0, end?: number): boolean {
    const sock = this.socket;
    if (this.isClosed || sock === undefined) return false;
    const stop = typeof data === "string" ? data.length : (end ?? data.byteLength);
    const n = typeof data === "string" ? sock.write(data) : sock.write(data, start, stop - start);
    const len = stop - start;
    if (n > 0 && this.ex) this.ex.wrote = true;
    if (n === len) return true;
    if (n < 0) {
      // Closed under us (typically a pooled connection the server closed while idle).
      this.shutdown(undefined);
      return false;
    }
    // Heads are ASCII when strings (request-head.ts), so characters are bytes.
    this.out = typeof data === "string" ? data.slice(n) : data.subarray(start + n, stop);
    return false;
  }

  private drained(): Promise<boolean> {
    if (this.isClosed) return Promise.resolve(false);
    if (this.out === undefined) return Promise.resolve(true);
    return new Promise<boolean>((resolve) => (this.drainWaiter = resolve));
  }

  onDrain(): void {
    const data = this.out;
    if (data === undefined) return;
    this.out = undefined;
    if (this.write(data)) {
      const waiter = this.drainWaiter;
      this.drainWaiter = undefined;
      waiter?.(true);
    }
  }
}
