/**
 * One try of a request whose caller decides, once the head is in, whether to keep the
 * response (attach it to where it goes) or drop it and try again: a ResponseSink that
 * resolves `head` and holds the body (its flow paused) until attached or discarded.
 */
import type { BodyFlow } from "./response-body.ts";
import type { ResponseHead } from "./response-head.ts";
import type { ResponseSink } from "./response-sink.ts";

export class Attempt implements ResponseSink {
  /** Resolves with the final head; rejects with the failure before it (errors.ts). */
  readonly head$: Promise<ResponseHead>;
  private resolve!: (head: ResponseHead) => void;
  private reject!: (err: Error) => void;
  private received: { head: ResponseHead; flow: BodyFlow; complete: boolean } | undefined;
  private target: ResponseSink | undefined;
  private held: Uint8Array[] = [];
  private ended = false;
  private failure: Error | undefined;

  constructor() {
    this.head$ = new Promise<ResponseHead>((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
  }

  head(head: ResponseHead, flow: BodyFlow, complete: boolean): void {
    this.received = { head, flow, complete };
    // Nothing reads the body until the caller decides.
    if (!complete) flow.pause();
    this.resolve(head);
  }

  data(chunk: Uint8Array): void {
    if (this.target) this.target.data(chunk);
    else this.held.push(chunk);
  }

  end(): void {
    if (this.target) this.target.end();
    else this.ended = true;
  }

  fail(err: Error): void {
    if (this.received === undefined) return this.reject(err);
    if (this.target) this.target.fail(err);
    else this.failure = err;
  }

  /** Keeps the response: `target` gets the head and everything after it. */
  attach(target: ResponseSink): void {
    const r = this.received!;
    this.target = target;
    target.head(r.head, r.flow, r.complete);
    for (const piece of this.held) target.data(piece);
    this.held = [];
    if (this.failure) target.fail(this.failure);
    else if (this.ended) target.end();
    else if (!r.complete) r.flow.resume();
  }

  /** Drops the response: its connection is not reused (the rest of the body is never read). */
  discard(): void {
    if (!this.ended) this.received?.flow.abandon(undefined);
  }
}
