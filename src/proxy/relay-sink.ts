/**
 * Relays an upstream response to the downstream Responder as it arrives: head fields
 * filtered (headers.ts), framing decided here, body pieces written with backpressure
 * both ways (a full downstream socket pauses the upstream one). An upstream that fails
 * after the head resets the downstream connection: the client sees an error, never a
 * clean end of a cut-short response.
 *
 * A streamed body that carries nothing for the stream idle timeout is cut (idle-streams.ts),
 * as HTTP/2 streams are: otherwise an upstream that stalls after its head would hold the
 * client's connection and an upstream one for ever (the request timeout ends at the head).
 *
 * The base of each direction's per-request relay (outbound-handler.ts, inbound-handler.ts):
 * one object per request is the response's sink, the client's watcher and the request's
 * bookkeeping, and the subclass hears how the relay ended.
 */
import { fromAProxy, relayedHead, sendableAsReceived, statusLineReusable } from "./relay-head.ts";
import type { BodyFlow } from "./transport/h1/response-body.ts";
import type { ResponseHead } from "./transport/h1/response-head.ts";
import type { ResponseSink } from "./transport/h1/response-sink.ts";
import { statusLine, type Responder, type ResponseBodyKind } from "./transport/h1-server/responder.ts";
import { eventNow } from "../core/clock.ts";
import type { HeaderEdits } from "./header-edits.ts";
import type { IdleStreams, WatchedStream } from "./h2/idle-streams.ts";

export abstract class RelaySink implements ResponseSink {
  /** The upstream's status, and when its head arrived (eventNow()). */
  status = 0;
  headAt = 0;
  private flow: BodyFlow | undefined;
  /** The subclass has been told how the relay ended: it hears that once, however it ended. */
  private over = false;
  /** A route's changes to the response's headers. */
  responseEdits: HeaderEdits | undefined = undefined;
  /** The upstream is a sidecar, whose own answers (x-mesh-error) go on unedited; any other's answer headers are removed. */
  upstreamIsProxy = false;
  /** Where a streamed body is watched for silence; undefined: never cut. */
  idleStreams: IdleStreams | undefined = undefined;
  private watched: WatchedStream | undefined;

  /** Watches `res` from the start: a client that leaves is heard here, before the head or after. */
  constructor(protected readonly res: Responder) {
    res.onGone = this;
  }

  /** The exchange failed before any of the response was relayed: answer for it. */
  protected abstract relayFailedEarly(err: Error): void;
  /** The response was relayed whole (`ok`), or cut short. */
  protected abstract relayDone(ok: boolean): void;
  /** The client left before the response head: stop the request. */
  protected abstract clientLeftEarly(): void;

  head(head: ResponseHead, flow: BodyFlow, complete: boolean): void {
    const res = this.res;
    this.flow = flow;
    this.status = head.status;
    this.headAt = eventNow();
    // A route edits the service's responses, not a proxy's answers on its way.
    const fromProxy = this.upstreamIsProxy;
    const edits = this.responseEdits === undefined || (fromProxy && fromAProxy(head)) ? undefined : this.responseEdits;
    // A whole response that this proxy would not change goes out as it came: one write from the upstream's read.
    if (complete && edits === undefined && head.status !== 204 && head.status !== 304 && sendableAsReceived(head, fromProxy) && res.startWhole()) {
      const raw = head.raw;
      res.sendWhole(raw.buf, raw.start, raw.fieldsEnd + 2 + head.contentLength);
      return;
    }
    let kind: ResponseBodyKind;
    if (res.isHead || head.status === 204 || head.status === 304) kind = "none";
    else if (head.contentLength >= 0) kind = "length";
    else kind = "chunked"; // chunked or close-delimited upstream; the Responder picks close for HTTP/1.0 clients
    // A HEAD's or 304's response may state the length the body would have had; a 204 states none (RFC 9110 §8.6).
    const tail = res.start(kind, kind === "chunked" || head.status === 204 ? -1 : head.contentLength);
    if (tail === undefined) return;
    // A body that is all here gets room after the head: both go out in one write.
    const reserve = complete && kind === "length" && !res.isHead ? head.contentLength : 0;
    const line = statusLineReusable(head) ? undefined : statusLine(head.status, head.statusText);
    // A complete response is written before head() returns (ResponseSink): its head can be built in scratch.
    const built = edits === undefined ? relayedHead(head, fromProxy, line, tail, reserve, complete) : relayedHead(head, fromProxy, line, edits.text + tail, reserve, complete, edits.drop);
    const wrote = res.sendHead(built.bytes, built.used);
    // A bound method, not a closure: one here would give every request a scope object (bench/alloc/scopes.test.ts).
    if (!complete && this.idleStreams !== undefined) this.watched = this.idleStreams.watch(this.cutIdle.bind(this));
    // A body that is all here goes out with the head in one write; a streaming one must not hold the head back.
    if (!complete && !(wrote && res.flush())) this.waitForDrain();
  }

  data(buf: Uint8Array, start: number, end: number): void {
    if (this.watched !== undefined) this.watched.lastActive = performance.now();
    if (!this.res.write(buf, start, end)) this.waitForDrain();
  }

  end(): void {
    this.res.onGone = undefined;
    this.res.end();
    this.done(true);
  }

  fail(err: Error): void {
    if (this.over) return;
    if (!this.res.headSent) {
      this.over = true;
      return this.relayFailedEarly(err);
    }
    this.res.onGone = undefined;
    this.res.abort();
    this.done(false);
  }

  /**
   * The client's connection closed: before the head, the request stops; after it, reading
   * the upstream's response stops (which fails this relay, once).
   */
  responseGone(): void {
    const flow = this.flow;
    if (flow === undefined) return this.clientLeftEarly();
    flow.abandon(undefined);
    this.done(false);
  }

  /** The streamed body carried nothing for the stream idle timeout: stop reading it, which fails this relay (the client's connection reset). */
  private cutIdle(): void {
    this.flow?.abandon(undefined);
  }

  private done(ok: boolean): void {
    if (this.over) return;
    this.over = true;
    this.idleStreams?.unwatch(this.watched);
    this.relayDone(ok);
  }

  private waitForDrain(): void {
    const flow = this.flow!;
    flow.pause();
    this.res.onDrain = () => flow.resume();
  }
}
