/**
 * What an HTTP/2 connection (connection.ts) keeps of each stream, on either side: the
 * flow-control windows both ways and the body waiting for the peer's window, then its
 * end (END_STREAM, or trailers); and the body written with backpressure.
 */

/** What a stream of either side asks of its connection. */
export interface WireSession {
  /** Sends what the windows allow of the stream's queued body (and its end once it is all out); true when nothing is left. */
  flushStream(stream: WireStream): boolean;
  sendRst(id: number, code: number): void;
  /** The reader took `bytes` of the stream's body: the peer may send as much again. */
  consumed(stream: WireStream, bytes: number): void;
  /** The socket takes no more for now: writes report false until it drains. */
  readonly blocked: boolean;
}

export abstract class WireStream {
  /** What the peer may still send on it, and what we may. */
  recvWindow: number;
  sendWindow: number;
  /** Body bytes our reader took that the peer was not yet given window for. */
  unacked = 0;
  /** Body not yet sent (the peer's window was shut), and its end to follow. */
  queued: Uint8Array[] = [];
  queuedBytes = 0;
  endQueued = false;
  trailers: string[] | undefined;
  /** The peer's END_STREAM arrived. */
  remoteEnded = false;
  /** Reset either way, or over both ways: nothing more is sent or delivered. */
  closed = false;
  /** A write returned false: the writer is told `drain` when the queue is out. */
  wantsDrain = false;

  constructor(
    readonly id: number,
    recvWindow: number,
    sendWindow: number,
  ) {
    this.recvWindow = recvWindow;
    this.sendWindow = sendWindow;
  }

  /**
   * Queues `chunk` of the body and sends what the windows allow, through `session` once
   * the stream may send (undefined: not yet). False when something waits (a window, the
   * socket, the stream's opening): the writer is told `drained()` when it may go on.
   */
  protected writeBody(chunk: Uint8Array, session: WireSession | undefined): boolean {
    this.queued.push(chunk);
    this.queuedBytes += chunk.byteLength;
    if (session !== undefined && session.flushStream(this) && !session.blocked) return true;
    this.wantsDrain = true;
    return false;
  }

  /** The connection took what was queued: a writer told to wait may write again. */
  onDrain(): void {
    if (!this.wantsDrain || this.closed) return;
    this.wantsDrain = false;
    this.drained();
  }

  /** Tells the writer it may write again. */
  protected abstract drained(): void;

  /** Marks it over and drops the body it still held to send; false if it was over already. */
  protected markClosed(): boolean {
    if (this.closed) return false;
    this.closed = true;
    this.queued = [];
    this.queuedBytes = 0;
    return true;
  }

  /** The last frame of what we send on it is written. */
  abstract sendDone(): void;
}
