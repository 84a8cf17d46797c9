/**
 * What an HTTP/2 connection (connection.ts) keeps of each stream, on either side: the
 * flow-control windows both ways and the body waiting for the peer's window, then its
 * end (END_STREAM, or trailers).
 */
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

  /** The writer may write again. */
  abstract onDrain(): void;
}
