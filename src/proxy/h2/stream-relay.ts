/**
 * One HTTP/2 stream relayed to an upstream session and back: request body, response
 * headers, body and trailers, with backpressure both ways, and resets carried across.
 * Before the response head a failure is answered by the proxy (local-reply.ts); after
 * it, the client's stream is reset, as the upstream's was.
 *
 * A failed try, or a response the policy retries, may be followed by another
 * (`retries`: stream-retries.ts decides), its request body replayed: the body sent is
 * kept until the response head, up to REPLAY_BYTES (Envoy buffers a request for retries
 * the same way); a longer one is not retried. Between tries the client's body waits.
 *
 * Trailers are relayed only to a client that said it takes them (`te: trailers`, which
 * every gRPC client sends); its stream then ends with the upstream's trailers, or an
 * empty trailer section when there were none.
 */
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from "node:http2";
import { errorParts, CLIENT_CLOSED_STATUS, type ProxyFailure } from "../errors.ts";
import { forwardedResponse } from "./h2-headers.ts";
import { replyLocally } from "./local-reply.ts";
import { GrpcMessageLimit } from "./grpc-messages.ts";
import { grpcStatusHeard } from "./grpc-outcome.ts";
import type { NextTry, RelayEnd, RelayOptions, TryFailure, TryRetries } from "./relay-contract.ts";
import type { WatchedStream } from "./idle-streams.ts";
import { grpcTimeoutValue } from "./grpc-deadline.ts";
import { ErrorCode } from "./wire/frames.ts";
import { outgoingFields } from "./wire/fields.ts";
import type { DownstreamHandler, H2ServerStream } from "./wire/server-stream.ts";
import type { H2ClientSession } from "./wire/client-session.ts";
import type { H2ClientStream, UpstreamFailure, UpstreamHandler } from "./wire/client-stream.ts";

/** gRPC's status for a call past its deadline. */
const DEADLINE_EXCEEDED = 4;

/** Request body kept for a retry; past it, a try is the only one. */
const REPLAY_BYTES = 64 * 1024;

export function relayStream(down: H2ServerStream, session: H2ClientSession, headers: OutgoingHttpHeaders, opts: RelayOptions, done: (end: RelayEnd) => void, retries?: TryRetries): void {
  new StreamRelay(down, headers, opts, done, retries).start(session);
}

class StreamRelay implements DownstreamHandler {
  private readonly result: RelayEnd = { status: 0, grpcStatus: undefined, failure: undefined, limit: undefined, headAt: 0 };
  private over = false;
  private timer: Timer | undefined;
  /** Set while waiting to send the next try. */
  private backoff: Timer | undefined;
  /** The try in flight's own timeout, with a per-try timeout. */
  private tryTimer: Timer | undefined;
  /** The call's deadline (deadlineMs), and when the call started. */
  private deadline: Timer | undefined;
  private startedAt = 0;
  private tries = 0;
  /** The try in flight. */
  private up: H2ClientStream | undefined;
  /** What the try in flight tells of its response (one for the relay: a try that ends never calls it again). */
  private readonly upstream = new UpstreamEvents(this);
  private trailers: OutgoingHttpHeaders | undefined;
  /** The body sent so far, while a retry could still need it; undefined past REPLAY_BYTES or once answered. */
  private replay: Buffer[] | undefined = [];
  private replayed = 0;
  private received = 0;
  private bodyEnded = false;
  /** For a gRPC call: its messages' lengths, held to the limit. */
  private readonly messages: GrpcMessageLimit | undefined;
  private watched: WatchedStream | undefined;

  constructor(
    private readonly down: H2ServerStream,
    private readonly headers: OutgoingHttpHeaders,
    private readonly opts: RelayOptions,
    private readonly done: (end: RelayEnd) => void,
    private readonly retries: TryRetries | undefined,
  ) {
    if (opts.grpc && opts.maxBodyBytes > 0) this.messages = new GrpcMessageLimit(opts.maxBodyBytes);
  }

  start(session: H2ClientSession): void {
    const { down, opts } = this;
    const limit = opts.maxBodyBytes;
    if (limit > 0 && !opts.grpc && Number(this.headers["content-length"] ?? 0) > limit) return this.overLimit();
    if (opts.deadlineMs !== undefined) {
      this.startedAt = performance.now();
      this.deadline = setTimeout(() => this.deadlineExceeded(), opts.deadlineMs);
    }
    if (opts.timeoutMs > 0)
      // Cleared at the response head: it only ever answers.
      this.timer = setTimeout(() => this.timedOut(`no response within ${opts.timeoutMs} ms`), opts.timeoutMs);
    this.watched = opts.idle.watch(() => this.idleOut());
    down.handle(this);
    this.tryOn(session);
  }

  // ---- the client's stream (DownstreamHandler) ----

  end(): void {
    this.bodyEnded = true;
    this.opts.mirror?.end();
    if (!this.over) this.up?.end();
  }

  drain(): void {
    this.up?.resume();
  }

  /** The client reset its stream, or went, before its response was over: so is the upstream's. */
  gone(): void {
    if (this.over) return;
    this.cancelUpstream();
    if (this.result.headAt === 0) this.result.status = CLIENT_CLOSED_STATUS;
    this.finish();
  }

  /**
   * Sends a try on `session`: at once, or once the session knows the peer's stream limit
   * (wire/client-session.ts); meanwhile its writes report false, so the client's body
   * waits, and the try's own timeout runs.
   */
  private tryOn(session: H2ClientSession): void {
    if (this.opts.perTryMs > 0) this.tryTimer = setTimeout(() => this.tryTimedOut(), this.opts.perTryMs);
    // A retry tells the service the time left, not the time the client first gave.
    const deadlineMs = this.opts.deadlineMs;
    if (this.tries++ > 0 && deadlineMs !== undefined) this.headers["grpc-timeout"] = grpcTimeoutValue(deadlineMs - (performance.now() - this.startedAt));
    const replay = this.replay;
    const headersOnly = this.bodyEnded && (replay === undefined || replay.length === 0);
    const up = session.request(outgoingFields(this.headers), headersOnly, this.upstream);
    this.up = up;
    if (headersOnly) return;
    for (const chunk of replay ?? []) up.write(chunk);
    if (this.bodyEnded) up.end();
    // A failed try may have paused the body for its own backpressure.
    else this.down.resume();
  }

  // ---- the try in flight (UpstreamEvents) ----

  upResponse(head: IncomingHttpHeaders, trailersOnly: boolean): void {
    clearTimeout(this.tryTimer);
    if (this.retries !== undefined && this.replay !== undefined) {
      const next = this.retries.afterResponse(Number(head[":status"]), trailersOnly && this.opts.grpc ? grpcStatusHeard(head["grpc-status"]) : undefined);
      if (next !== undefined) {
        this.cancelUpstream();
        return this.again(next, "upstream-reset", `answered ${head[":status"]}${head["grpc-status"] === undefined ? "" : ` (grpc-status ${head["grpc-status"]})`}`);
      }
    }
    clearTimeout(this.timer);
    this.replay = undefined;
    this.result.headAt = performance.now();
    this.result.status = Number(head[":status"]);
    const out = forwardedResponse(head, this.opts.upstreamIsProxy, this.opts.responseEdits);
    if (trailersOnly) {
      this.result.grpcStatus = grpcStatusHeard(head["grpc-status"]);
      this.down.respond(out, true);
      return this.finish();
    }
    this.down.respond(out);
  }

  upData(chunk: Buffer): void {
    if (this.watched !== undefined) this.watched.lastActive = performance.now();
    if (!this.down.write(chunk)) this.up!.pause();
  }

  upTrailers(trailers: IncomingHttpHeaders): void {
    this.result.grpcStatus = grpcStatusHeard(trailers["grpc-status"]);
    this.trailers = forwardedResponse(trailers, this.opts.upstreamIsProxy);
  }

  upEnd(): void {
    this.down.end(this.opts.takesTrailers ? (this.trailers ?? {}) : undefined);
    this.finish();
  }

  upDrain(): void {
    this.down.resume();
  }

  upFailed(failure: UpstreamFailure): void {
    this.up = undefined;
    if (this.result.headAt !== 0) return this.resetAfterHead();
    // Once sent, the request may have reached the peer, whatever broke: a reset, never a try that never left.
    this.beforeHead(failure.kind === "reset" ? "upstream-reset" : failure.kind, failure.message);
  }

  /**
   * The try had no response head within its own timeout: given up as a reset when its
   * stream was open (it may have reached the service), as a connect failure while it
   * still waited for its session's settings (nothing was sent).
   */
  private tryTimedOut(): void {
    const up = this.up;
    if (this.over || up === undefined) return;
    this.cancelUpstream();
    const detail = `no response within ${this.opts.perTryMs} ms (one try's timeout)`;
    if (!up.opened) {
      // Its session never opened the stream: nothing was sent, so it is retried as one that never connected.
      const next = this.retries?.afterFailure("connect-failure", this.replay !== undefined);
      if (next !== undefined) return this.again(next, "timeout", `${detail}, waiting for the peer's HTTP/2 settings`);
      return this.fail("timeout", `${detail}, waiting for the peer's HTTP/2 settings`);
    }
    const next = this.retries?.afterFailure("reset", this.replay !== undefined);
    if (next !== undefined) return this.again(next, "timeout", detail);
    this.fail("timeout", detail);
  }

  /** A try failed before its response head: another try if the policy allows one, else the proxy's answer. */
  private beforeHead(failure: ProxyFailure | "refused-stream" | "not-taken", detail: string): void {
    clearTimeout(this.tryTimer);
    const unprocessed = failure === "refused-stream" || failure === "not-taken";
    const asTry: TryFailure | undefined = unprocessed || failure === "connect-failure" || failure === "peer-identity" ? failure : failure === "upstream-reset" ? "reset" : undefined;
    const next = asTry === undefined ? undefined : this.retries?.afterFailure(asTry, this.replay !== undefined);
    const answered = unprocessed ? "upstream-reset" : failure;
    if (next !== undefined) return this.again(next, answered, detail);
    this.fail(answered, detail);
  }

  /**
   * Sends the next try after its backoff; meanwhile the client's body waits (paused). Should
   * the body outgrow what is kept for a retry all the same, the last try's failure is answered.
   */
  private again(next: NextTry, failure: ProxyFailure, detail: string): void {
    this.up = undefined;
    if (!this.bodyEnded) this.down.pause();
    this.backoff = setTimeout(() => {
      this.backoff = undefined;
      if (this.over) return;
      if (this.replay === undefined) return this.fail(failure, `${detail}; the request body outgrew what is kept for a retry`);
      this.tryOn(next.session());
    }, next.waitMs);
  }

  data(chunk: Buffer): void {
    if (this.over) return;
    if (this.watched !== undefined) this.watched.lastActive = performance.now();
    this.received += chunk.byteLength;
    const limit = this.opts.maxBodyBytes;
    // Refused before the chunk that crosses the limit goes on.
    if (this.messages !== undefined ? !this.messages.accepts(chunk) : limit > 0 && this.received > limit) return this.overLimit();
    this.opts.mirror?.write(chunk);
    if (this.replay !== undefined) {
      this.replayed += chunk.byteLength;
      if (this.replayed <= REPLAY_BYTES) this.replay.push(chunk);
      else this.replay = undefined;
    }
    if (this.up !== undefined) {
      if (!this.up.write(chunk)) this.down.pause();
    } else if (this.replay === undefined) {
      // Between tries the body is paused; a chunk that came all the same, with nothing kept to send it from, would be lost.
      this.fail("upstream-reset", "the request body outgrew what is kept while no try was open");
    }
  }

  private overLimit(): void {
    this.cancelUpstream();
    const what = this.opts.grpc ? "a request message" : "request body";
    // Answered, and the client told to stop sending (local-reply.ts); once a response has begun, it cannot be finished: reset.
    if (this.result.headAt === 0) return this.fail("bad-request", `${what} over the limit of ${this.opts.maxBodyBytes} bytes`, 413);
    this.result.failure = "bad-request";
    this.down.reset(ErrorCode.INTERNAL_ERROR);
    this.finish();
  }

  /** Cancels the try in flight, if any (RST_STREAM CANCEL once sent; counted against its session, wire/client-session.ts). */
  private cancelUpstream(): void {
    this.up?.cancel();
    this.up = undefined;
  }

  /** The upstream's stream failed after its head: the client's is reset too, so a body cut short never reads as complete. */
  private resetAfterHead(): void {
    this.result.failure = "upstream-reset";
    this.down.reset(ErrorCode.INTERNAL_ERROR);
    this.finish();
  }

  private fail(failure: ProxyFailure, detail: string, status?: number, grpcStatus?: number): void {
    if (this.over) return;
    this.result.failure = failure;
    const answer = errorParts(failure, `${this.opts.upstreamName}: ${detail}`);
    this.result.status = replyLocally(this.down, status === undefined ? answer : { ...answer, status }, this.opts.grpc, grpcStatus);
    this.finish();
  }

  /** The call's deadline passed: DEADLINE_EXCEEDED before a response began, reset after. */
  private deadlineExceeded(): void {
    this.timedOut(`the call's deadline (grpc-timeout) of ${this.opts.deadlineMs} ms passed`, DEADLINE_EXCEEDED);
  }

  /** Nothing either way for the idle timeout: answered 504 (UNAVAILABLE) before a response began, reset after. */
  private idleOut(): void {
    this.watched = undefined;
    this.timedOut(`the stream carried nothing for ${this.opts.idle.timeoutMs} ms`);
  }

  /** A time limit of the whole call passed: the try in flight is cancelled, and the client answered (with `grpcStatus` for gRPC) or, once a response began, reset. */
  private timedOut(detail: string, grpcStatus?: number): void {
    if (this.over) return;
    this.cancelUpstream();
    if (this.result.headAt === 0) return this.fail("timeout", detail, undefined, grpcStatus);
    this.result.failure = "timeout";
    this.down.reset(ErrorCode.INTERNAL_ERROR);
    this.finish();
  }

  private finish(): void {
    if (this.over) return;
    this.over = true;
    this.opts.idle.unwatch(this.watched);
    this.replay = undefined;
    clearTimeout(this.timer);
    clearTimeout(this.backoff);
    clearTimeout(this.tryTimer);
    clearTimeout(this.deadline);
    // A body the call did not send whole is not sent whole to its copy either.
    if (!this.bodyEnded) this.opts.mirror?.cancel();
    this.done(this.result);
  }
}

/** The relay's side of its upstream streams: each event goes to the try in flight, the only stream that still reports. */
class UpstreamEvents implements UpstreamHandler {
  constructor(private readonly relay: StreamRelay) {}
  response(headers: IncomingHttpHeaders, endStream: boolean): void {
    this.relay.upResponse(headers, endStream);
  }
  data(chunk: Buffer): void {
    this.relay.upData(chunk);
  }
  trailers(headers: IncomingHttpHeaders): void {
    this.relay.upTrailers(headers);
  }
  end(): void {
    this.relay.upEnd();
  }
  drain(): void {
    this.relay.upDrain();
  }
  failed(failure: UpstreamFailure): void {
    this.relay.upFailed(failure);
  }
}
