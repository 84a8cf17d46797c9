/**
 * Relays an upstream response to the downstream Responder as it arrives: head fields
 * filtered (headers.ts), framing decided here, body pieces written with backpressure
 * both ways (a full downstream socket pauses the upstream one). An upstream that fails
 * after the head resets the downstream connection: the client sees an error, never a
 * clean end of a cut-short response.
 */
import { relayedResponseFields } from "./headers.ts";
import type { BodyFlow } from "./transport/h1/response-body.ts";
import type { ResponseHead } from "./transport/h1/response-head.ts";
import type { ResponseSink } from "./transport/h1/response-sink.ts";
import type { Responder, ResponseFraming } from "./transport/h1-server/responder.ts";

const NONE: ResponseFraming = { kind: "none" };
const CHUNKED: ResponseFraming = { kind: "chunked" };

export class RelaySink implements ResponseSink {
  /** The upstream's status, and when its head arrived (performance.now()). */
  status = 0;
  headAt = 0;
  private flow: BodyFlow | undefined;

  constructor(
    private readonly res: Responder,
    /** The exchange failed before any of the response was relayed: answer for it. */
    private readonly failedEarly: (err: Error) => void,
    /** The response was relayed whole, or cut short (`ok` false). */
    private readonly done: (ok: boolean) => void,
  ) {}

  head(head: ResponseHead, flow: BodyFlow, complete: boolean): void {
    const res = this.res;
    this.flow = flow;
    this.status = head.status;
    this.headAt = performance.now();
    res.onGone = () => {
      flow.abandon(undefined);
      this.done(false);
    };
    let framing: ResponseFraming;
    if (res.isHead || head.status === 204 || head.status === 304) framing = NONE;
    else if (head.contentLength >= 0) framing = { kind: "length", length: head.contentLength };
    else framing = CHUNKED; // chunked or close-delimited upstream; the Responder picks close for HTTP/1.0 clients
    const wrote = res.head(head.status, head.statusText, relayedResponseFields(head.headers), framing, framing === NONE ? head.contentLength : -1);
    // A body that is all here goes out with the head in one write; a streaming one must not hold the head back.
    if (!complete && !(wrote && res.flush())) this.waitForDrain();
  }

  data(chunk: Uint8Array): void {
    if (!this.res.write(chunk)) this.waitForDrain();
  }

  end(): void {
    this.res.onGone = undefined;
    this.res.end();
    this.done(true);
  }

  fail(err: Error): void {
    if (!this.res.headSent) return this.failedEarly(err);
    this.res.onGone = undefined;
    this.res.abort();
    this.done(false);
  }

  private waitForDrain(): void {
    const flow = this.flow!;
    flow.pause();
    this.res.onDrain = () => flow.resume();
  }
}
