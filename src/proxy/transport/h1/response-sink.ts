/**
 * Where a connection delivers a response: head, body pieces, end, or failure. Two
 * kinds exist: `StreamedResponse` turns it into a fetch-style Response (pool.send), and
 * a proxy's downstream writer relays it byte for byte without building one.
 */
import { ProtocolError } from "./errors.ts";
import { ResponseBody, type BodyFlow } from "./response-body.ts";
import type { ResponseHead } from "./response-head.ts";

export interface ResponseSink {
  /**
   * The final response head. `complete`: the whole body already arrived with it, and its
   * pieces and end() follow synchronously; otherwise `flow` pauses, resumes or abandons
   * the body as it streams.
   */
  head(head: ResponseHead, flow: BodyFlow, complete: boolean): void;
  /** A piece of the body, buf[start..end); the sink owns it (each socket read is a fresh buffer). */
  data(buf: Uint8Array, start: number, end: number): void;
  end(): void;
  /** The exchange failed: before the head (nothing delivered) or with the body cut short. */
  fail(err: Error): void;
}

/** Builds a Response: the body as bytes when it came whole with the head, as a stream otherwise. */
export class StreamedResponse implements ResponseSink {
  readonly promise: Promise<Response>;
  private resolve!: (res: Response) => void;
  private reject!: (err: Error) => void;
  private settled = false;
  private pending: ResponseHead | undefined;
  private pieces: Uint8Array[] | undefined;
  private body: ResponseBody | undefined;

  constructor() {
    this.promise = new Promise<Response>((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
  }

  head(head: ResponseHead, flow: BodyFlow, complete: boolean): void {
    if (complete) {
      this.pending = head;
      this.pieces = [];
      return;
    }
    this.body = new ResponseBody(flow);
    this.settle(head, this.body.stream);
  }

  data(buf: Uint8Array, start: number, end: number): void {
    const chunk = start === 0 && end === buf.byteLength ? buf : buf.subarray(start, end);
    if (this.pieces !== undefined) this.pieces.push(chunk);
    else this.body?.push(chunk);
  }

  end(): void {
    const pieces = this.pieces;
    if (pieces === undefined) return this.body?.close();
    // Socket reads are plain (never shared) ArrayBuffers.
    const whole = (pieces.length === 0 ? null : pieces.length === 1 ? pieces[0]! : Buffer.concat(pieces)) as Uint8Array<ArrayBuffer> | null;
    this.settle(this.pending!, whole);
  }

  fail(err: Error): void {
    if (this.body !== undefined) return this.body.error(err);
    if (this.settled) return;
    this.settled = true;
    this.reject(err);
  }

  private settle(head: ResponseHead, body: ReadableStream<Uint8Array> | Uint8Array<ArrayBuffer> | null): void {
    let res: Response;
    try {
      res = new Response(body, { status: head.status, statusText: head.statusText, headers: head.headers });
    } catch (err) {
      // The connection fails the exchange with it (and so this sink, still unsettled).
      throw new ProtocolError(`unusable response head: ${(err as Error).message}`);
    }
    this.settled = true;
    this.resolve(res);
  }
}
