/**
 * The response body as a ReadableStream fed from the socket, with backpressure: once
 * the consumer's queue is full the socket is paused (the kernel buffer then pushes
 * back on the upstream) and resumed when the consumer pulls. Memory per response is
 * the queue limit plus what the socket had already read when paused (at most one
 * read, 512 KiB in Bun 1.4.5), never the whole body.
 */

/** What the body needs from its connection. */
export interface BodyFlow {
  pause(): void;
  resume(): void;
  /** The consumer cancelled: the rest of the body will never be read. */
  abandon(reason: unknown): void;
}

/** Queue size at which the socket is paused. */
const HIGH_WATER_BYTES = 64 * 1024;

export class ResponseBody {
  readonly stream: ReadableStream<Uint8Array>;
  private controller!: ReadableStreamDefaultController<Uint8Array>;
  private finished = false;

  constructor(private readonly flow: BodyFlow) {
    this.stream = new ReadableStream<Uint8Array>(
      {
        start: (controller) => {
          this.controller = controller;
        },
        pull: () => {
          this.flow.resume();
        },
        cancel: (reason) => {
          if (this.finished) return;
          this.finished = true;
          this.flow.abandon(reason);
        },
      },
      { highWaterMark: HIGH_WATER_BYTES, size: (chunk) => chunk?.byteLength ?? 0 },
    );
  }

  /**
   * Queues `data`, which the caller must not reuse (Bun hands each socket read over in a
   * fresh buffer). A bound function, so a decoder can be given it directly.
   */
  readonly push = (data: Uint8Array): void => {
    if (this.finished || data.byteLength === 0) return;
    this.controller.enqueue(data);
    if (this.controller.desiredSize! <= 0) this.flow.pause();
  };

  close(): void {
    if (this.finished) return;
    this.finished = true;
    this.controller.close();
  }

  /** The consumer sees this error on its next read: a cut-short body is never a clean end. */
  error(err: Error): void {
    if (this.finished) return;
    this.finished = true;
    this.controller.error(err);
  }
}
