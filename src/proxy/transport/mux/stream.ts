/**
 * One stream of a mux session, shaped like the Bun socket the HTTP/1.1 code already
 * drives (write/pause/resume/end/terminate/readyState), so a stream is a connection to
 * it. Reading paused holds what arrives (at most the stream's window, which the peer
 * must respect) and credits the peer only for bytes handed on.
 */
import { STREAM_WINDOW } from "./frame.ts";
import type { MuxSession } from "./session.ts";

/** A paused stream's first holding buffer; it doubles as more arrives. */
const HOLD_FIRST_BYTES = 4 * 1024;

/** Events of a byte connection, as ServerConnection and H1Connection take them. */
export interface StreamHandler {
  /** No request in progress on the connection. */
  readonly idle: boolean;
  onData(chunk: Buffer): void;
  onDrain(): void;
  /** The peer closed (FIN: no error) or dropped (RESET, or the session died: an error) the stream. */
  onClose(err?: Error): void;
  onTimeout(): void;
}

export class MuxStream {
  handler: StreamHandler | undefined;
  /** Bytes we may still send before the peer credits more. */
  sendWindow = STREAM_WINDOW;
  /** Bytes the peer may still send us. */
  recvWindow = STREAM_WINDOW;
  /** A write came up short: the handler hears onDrain when there is room again. */
  wantsDrain = false;
  open = true;
  /** performance.now() when the server accepted it (0 on the client). */
  openedAt = 0;
  /** Where the session copies this stream's small pieces (frame-reader.ts payload()); written once, front to back. */
  slab: Buffer | undefined = undefined;
  slabAt = 0;
  private paused = false;
  /** Bytes handed on but not yet credited back to the peer. */
  private uncredited = 0;
  /**
   * Held while paused: copied into one buffer, so what a paused stream holds costs its own
   * bytes (at most the window) whatever pieces they came in, and pins no read or slab.
   */
  private inbox: Buffer | undefined;
  private inboxBytes = 0;
  /** The peer's FIN came while bytes were held: it is passed on after them. */
  finHeld = false;

  constructor(
    readonly session: MuxSession,
    readonly id: number,
  ) {}

  /** Frames leave at the end of the turn (frame-writer.ts). */
  get batchesWrites(): true {
    return true;
  }

  /** Bun's: 1 usable, 0 closed. A client's stream on a session that heard GOAWAY takes no new request. */
  get readyState(): 0 | 1 {
    return this.open && !(this.session.draining && this.session.role === "client") ? 1 : 0;
  }

  /** Bytes taken (all, some, or 0 until onDrain); -1 once closed. Strings are latin1 heads. */
  write(data: string | Uint8Array, offset = 0, length?: number): number {
    if (!this.open) return -1;
    const len = length ?? (typeof data === "string" ? data.length : data.byteLength - offset);
    return this.session.send(this, data, offset, len);
  }

  /** Closes gracefully: what was written goes first, then FIN. */
  end(): void {
    if (!this.open) return;
    this.open = false;
    this.session.finish(this, false);
  }

  /** Drops the stream: the peer must not take what it got for complete. */
  terminate(): void {
    if (!this.open) return;
    this.open = false;
    this.session.finish(this, true);
  }

  /** Its request was refused for breaking HTTP: the session counts it as a stream ended busy (session.ts refusedBusy). */
  refusedPeer(): void {
    this.session.refusedBusy(this);
  }

  pause(): void {
    this.paused = true;
  }

  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    const held = this.inbox;
    this.inbox = undefined;
    if (held !== undefined) this.received(held.subarray(0, this.inboxBytes));
    if (this.inbox === undefined && this.finHeld) {
      this.finHeld = false;
      this.closedByPeer(undefined);
      this.session.forget(this);
    }
  }

  /** The session's timer fires for its streams each period (see MuxSession.onTimeout). */
  timeout(_seconds: number): void {}

  // ---- from the session ----

  received(chunk: Buffer): void {
    if (this.paused || this.inbox !== undefined) return this.hold(chunk);
    this.handler?.onData(chunk);
    this.uncredited += chunk.byteLength;
    // Crediting in halves of the window: one WINDOW frame per 64 KiB taken, not per read.
    if (this.uncredited >= STREAM_WINDOW / 2 && this.open) {
      this.session.credit(this, this.uncredited);
      this.uncredited = 0;
    }
  }

  private hold(chunk: Buffer): void {
    const n = chunk.byteLength;
    if (this.inbox === undefined) {
      this.inbox = Buffer.allocUnsafe(Math.max(n, HOLD_FIRST_BYTES));
      this.inboxBytes = 0;
    } else if (this.inboxBytes + n > this.inbox.byteLength) {
      // The peer cannot send past the window while nothing is credited, so this stays within it (and a chunk of it).
      const grown = Buffer.allocUnsafe(Math.max(this.inboxBytes + n, this.inbox.byteLength * 2));
      this.inbox.copy(grown, 0, 0, this.inboxBytes);
      this.inbox = grown;
    }
    chunk.copy(this.inbox, this.inboxBytes);
    this.inboxBytes += n;
  }

  /**
   * FIN (err undefined) or RESET from the peer, or the session's end. A FIN waits behind
   * held bytes (false: not closed yet; the stream still counts against the session's
   * limit, and tells it when it is done).
   */
  closedByPeer(err: Error | undefined): boolean {
    if (!this.open) return true;
    if (err === undefined && this.inbox !== undefined) {
      this.finHeld = true;
      return false;
    }
    this.open = false;
    this.inbox = undefined;
    this.handler?.onClose(err);
    return true;
  }
}
