/**
 * One outbound request to a destination, with the resilience that belongs to it:
 * endpoints ejected by outlier detection are skipped, and a try that failed before the
 * upstream saw the request (connect failure, refused, wrong peer identity) or an
 * idempotent bodiless request that failed with a configured status is retried on
 * another endpoint, with jittered backoff, within the destination's retry budget.
 * A request with a body is retried only if it never left: once sent, its body is spent.
 * The destination's circuit breaker caps requests and retries in flight (503 with
 * `x-mesh-overflow` naming the limit), and one deadline bounds all tries of a request.
 *
 * A state machine driven by the tries' ResponseSink callbacks, not an async loop: the
 * common request (one try, kept) costs no promise and no microtask hop.
 */
import type { Destination } from "./destinations.ts";
import type { Endpoint, PickContext } from "./endpoint.ts";
import { errorParts, type ErrorParts, type ProxyFailure } from "./errors.ts";
import type { ProxyMetrics } from "./metrics.ts";
import { backoffMs, shouldRetry, type AttemptOutcome } from "./resilience/retry.ts";
import { RetryAllowance } from "./resilience/retry-allowance.ts";
import { proxyFailureOf, requestMayHaveBeenSent } from "./transport/h1/index.ts";
import type { RequestBody } from "./transport/h1/request-body.ts";
import type { PreparedRequest } from "./transport/h1/request-head.ts";
import type { BodyFlow } from "./transport/h1/response-body.ts";
import type { ResponseHead } from "./transport/h1/response-head.ts";
import type { ResponseSink } from "./transport/h1/response-sink.ts";
import { recordLatency } from "./balancer/index.ts";
import { eventNow, systemClock } from "../core/clock.ts";
import { Deadline, TryDeadline } from "./deadline.ts";
import { zoneCandidates } from "./zones.ts";
import type { OverflowReason } from "./resilience/circuit-breaker.ts";
import type { CallSettings } from "./policy.ts";

/** How the call ends: a response to relay, or the proxy's own answer. */
export interface CallOutcome {
  /** The response is kept: return where it goes; its head follows at once. */
  respond(status: number): ResponseSink;
  failed(error: ErrorParts): void;
  /** The caller left before the response head; the call stopped. */
  abandoned(): void;
}

/** What the caller's side can do to a call in progress. */
export interface CallHandle {
  /** The caller left before the response head: abort the try in flight, start no other. */
  cancel(): void;
}

type FailureOutcome = Exclude<AttemptOutcome["kind"], "status" | "grpc-status" | "response-started">;

const OUTCOME: Record<ProxyFailure, FailureOutcome> = {
  "connect-failure": "connect-failure",
  "peer-identity": "refused", // the request never left this proxy
  "upstream-reset": "reset-before-response",
  timeout: "timeout-before-response",
  "no-route": "refused",
  "no-healthy-endpoints": "refused",
  overflow: "refused",
  "bad-request": "refused",
  // Only an inbound decides these; to a caller they are the status it received.
  unauthenticated: "refused",
  forbidden: "refused",
  "rate-limited": "refused",
  "not-ready": "refused",
  fault: "refused",
};

/**
 * An endpoint for a try: among the healthy ones of the caller's zone while it has enough
 * (zones.ts), and for a retry one not tried yet (`tried`: every endpoint the call tried), in
 * the zone or else anywhere; failing that, any healthy one again.
 */
export function pickEndpoint(dest: Destination, ctx: PickContext, tried: readonly Endpoint[] | undefined): Endpoint | undefined {
  const healthy = dest.outlier.healthy(dest.endpoints);
  const preferred = dest.zones === undefined ? healthy : zoneCandidates(dest.zones, dest.outlier, Math.random);
  if (tried === undefined) return dest.balancer.pick(preferred, ctx);
  const untried = without(preferred, tried);
  if (untried.length > 0) return dest.balancer.pick(untried, ctx);
  const elsewhere = preferred === healthy ? untried : without(healthy, tried);
  return dest.balancer.pick(elsewhere.length > 0 ? elsewhere : healthy, ctx);
}

/** A loop, not filter with a closure: a closure over `tried` would cost every request a scope object. */
function without(endpoints: readonly Endpoint[], tried: readonly Endpoint[]): Endpoint[] {
  const out: Endpoint[] = [];
  for (const e of endpoints) if (!tried.includes(e)) out.push(e);
  return out;
}

/** Undefined when the call was refused at once (its outcome already heard). */
export function callDestination(
  dest: Destination,
  prepared: PreparedRequest,
  body: RequestBody | null,
  ctx: PickContext,
  metrics: ProxyMetrics,
  outcome: CallOutcome,
  /** Timeouts and retries: the destination's, or its route rule's. */
  settings: CallSettings = dest.call,
): CallHandle | undefined {
  const admitted = dest.breaker.tryAcquire("requests");
  if (admitted !== true) return void outcome.failed(overflow(dest, admitted));
  // Requests queue in the pools once every endpoint is at maxConnections; past this many, refuse.
  if (dest.pools.waiting() >= dest.policy.circuitBreaker.maxPendingRequests) {
    dest.breaker.release("requests");
    return void outcome.failed(overflow(dest, "max-pending-requests"));
  }
  dest.budget.onRequest();
  const call = new OutboundCall(dest, prepared, body, ctx, metrics, outcome, settings);
  call.send();
  return call;
}

/**
 * A retry's sink: the first try's is the call itself, so the common request makes no
 * object for it. Callbacks of a try that is no longer current are ignored.
 */
class Retry implements ResponseSink {
  constructor(private readonly call: OutboundCall) {}
  head(head: ResponseHead, flow: BodyFlow, complete: boolean): void {
    this.call.onHead(this, head, flow, complete);
  }
  data(buf: Uint8Array, start: number, end: number): void {
    this.call.onData(this, buf, start, end);
  }
  end(): void {
    this.call.onEnd(this);
  }
  fail(err: Error): void {
    this.call.onFail(this, err);
  }
}

/**
 * The call is also the deadline of all its tries (Deadline: their abort signal and the
 * entry in its timeout's queue), so a request makes one object for both.
 */
class OutboundCall extends Deadline implements CallHandle, ResponseSink {
  private callerGone = false;
  private readonly replayable: boolean;
  private attempt = 0;
  /** The sink of the try in flight: the call itself for the first, a Retry after. */
  private current: ResponseSink | undefined;
  /** The endpoint of the try in flight, or of the last one. */
  private tried: Endpoint | undefined;
  /** Every endpoint tried, from the first retry on (none is made for a call tried once). */
  private triedAll: Endpoint[] | undefined;
  /** eventNow() when the try in flight was sent; 0 when nothing reads it (no EWMA). */
  private sentAt = 0;
  /** Made at the first retry, so the common request makes none. */
  private allowance: RetryAllowance | undefined;
  /** The try in flight's own deadline, with a per-try timeout; without one the call's deadline is the try's signal. */
  private tryDeadline: TryDeadline | undefined;
  /** Where the kept response goes, once chosen. */
  private target: ResponseSink | undefined;
  private settled = false;
  /**
   * The kept response's body is still coming: the request still counts against maxRequests
   * and in flight at its endpoint (least-request, ewma), as an HTTP/2 stream does until it
   * ends, so a streamed or stalled body is not a free slot.
   */
  private streaming = false;

  constructor(
    private readonly dest: Destination,
    private readonly prepared: PreparedRequest,
    private readonly body: RequestBody | null,
    private readonly ctx: PickContext,
    private readonly metrics: ProxyMetrics,
    private readonly outcome: CallOutcome,
    private readonly settings: CallSettings,
  ) {
    super(settings.timeoutMs);
    this.replayable = prepared.replayable;
  }

  send(): void {
    if (this.callerGone) return this.abandon();
    const dest = this.dest;
    // A retry's wait ran to the request timeout (retry() ends it there): no try is sent past it.
    if (this.attempt > 0 && this.ms > 0 && performance.now() >= this.due) return this.failWith("timeout", `${dest.name}: no response within ${this.ms} ms, retries included`);
    if (this.tried !== undefined) (this.triedAll ??= []).push(this.tried);
    const endpoint = pickEndpoint(dest, this.ctx, this.triedAll);
    if (!endpoint) return this.failWith("no-healthy-endpoints", `service ${dest.name} has no endpoint to send to`);
    this.tried = endpoint;
    endpoint.inflight++;
    // Only the EWMA balancer reads a try's latency: skip the clock read otherwise.
    this.sentAt = dest.ewmaDecayMs !== undefined ? eventNow() : 0;
    const sink = this.attempt === 0 ? this : new Retry(this);
    this.current = sink;
    const perTryMs = this.settings.perTryMs;
    const signal = perTryMs > 0 ? (this.tryDeadline = new TryDeadline(perTryMs, this)) : this;
    dest.pools.dispatch(endpoint, this.prepared, this.body, sink, signal);
  }

  // The first try's sink.
  head(head: ResponseHead, flow: BodyFlow, complete: boolean): void {
    this.onHead(this, head, flow, complete);
  }
  data(buf: Uint8Array, start: number, end: number): void {
    this.onData(this, buf, start, end);
  }
  end(): void {
    this.onEnd(this);
  }
  fail(err: Error): void {
    this.onFail(this, err);
  }

  override cancel(): void {
    if (this.settled || this.callerGone) return;
    this.callerGone = true;
    // The try in flight hears it (and fails into onFail); between tries, send() does.
    super.cancel();
  }

  private abandon(): void {
    this.current = undefined;
    this.settle();
    this.outcome.abandoned();
  }

  onHead(t: ResponseSink, head: ResponseHead, flow: BodyFlow, complete: boolean): void {
    if (t !== this.current) return;
    this.endTry();
    const dest = this.dest;
    const endpoint = this.tried!;
    if (dest.ewmaDecayMs !== undefined) recordLatency(endpoint, eventNow() - this.sentAt, systemClock, dest.ewmaDecayMs);
    dest.outlier.onResult(endpoint, head.status < 500);
    if (this.replayable && shouldRetry(this.settings.retryPolicy, this.attempt, { kind: "status", status: head.status }) && this.takeRetry()) {
      // Dropped: the rest of its body is never read, so its connection is not reused.
      endpoint.inflight--;
      this.current = undefined;
      flow.abandon(undefined);
      return this.retry();
    }
    this.settle(true);
    this.streaming = true;
    this.target = this.outcome.respond(head.status);
    this.target.head(head, flow, complete);
  }

  onData(t: ResponseSink, buf: Uint8Array, start: number, end: number): void {
    if (t === this.current) this.target?.data(buf, start, end);
  }

  onEnd(t: ResponseSink): void {
    if (t !== this.current) return;
    this.bodyOver();
    this.target?.end();
  }

  onFail(t: ResponseSink, err: Error): void {
    if (t !== this.current) return;
    // After the head, the kept response's body broke: that is the target's to report.
    if (this.target !== undefined) {
      this.bodyOver();
      return this.target.fail(err);
    }
    const dest = this.dest;
    const endpoint = this.tried!;
    endpoint.inflight--;
    const tryExpired = this.endTry();
    // Not the endpoint's failure: no outlier mark, no retry.
    if (this.callerGone) return this.abandon();
    const expired = this.expired;
    const kind = expired || tryExpired ? "timeout" : proxyFailureOf(err);
    // This proxy's own limit of upstream connections (dial.ts): not the endpoint's doing, and no other endpoint would escape it.
    if (kind === "overflow") return this.failWith("overflow", `${dest.name}: ${err.message}`, { "x-mesh-overflow": "upstream-connections" });
    dest.outlier.onResult(endpoint, false);
    const detail = `${dest.name} endpoint ${endpoint.key}: ${expired ? `no response within ${this.ms} ms` : tryExpired ? `no response within ${this.settings.perTryMs} ms (one try's timeout)` : err.message}`;
    // A request that never left (connect failure, refused peer) is safe to send again,
    // whatever its method, and its body was never read; anything else only if replayable.
    const sent = requestMayHaveBeenSent(err);
    const failure: FailureOutcome = sent ? OUTCOME[kind] : kind === "peer-identity" ? "refused" : "connect-failure";
    if ((this.body !== null && sent) || !shouldRetry(this.settings.retryPolicy, this.attempt, { kind: failure }, this.replayable) || !this.takeRetry())
      return this.failWith(kind, detail);
    this.current = undefined;
    this.retry();
  }

  private retry(): void {
    this.metrics.retries.inc({ peer: this.dest.name });
    const wait = backoffMs(this.settings.retryPolicy, this.attempt++, Math.random);
    // No try listens to the deadline while the retry waits: a wait past it ends there.
    const left = this.ms > 0 ? this.due - performance.now() : wait;
    setTimeout(() => this.send(), Math.max(0, Math.min(wait, left)));
  }

  /** The try in flight is over: its own deadline, if it had one, is given up; whether it had expired. */
  private endTry(): boolean {
    const t = this.tryDeadline;
    if (t === undefined) return false;
    this.tryDeadline = undefined;
    t.end();
    return t.expired;
  }

  /** Whether one more try may go out: time left, a retry slot and budget (retry-allowance.ts). */
  private takeRetry(): boolean {
    return !this.expired && (this.allowance ??= new RetryAllowance()).take(this.dest);
  }

  private failWith(kind: ProxyFailure, detail: string, extra?: Record<string, string>): void {
    this.current = undefined;
    this.settle();
    this.outcome.failed(errorParts(kind, detail, extra));
  }

  /**
   * The call's outcome is decided: its deadline and retry slot are released, once, and its
   * request slot too unless a response body is `responding` (bodyOver releases it then).
   */
  private settle(responding = false): void {
    if (this.settled) return;
    this.settled = true;
    this.clear();
    if (!responding) this.dest.breaker.release("requests");
    this.allowance?.release(this.dest);
  }

  /** The kept response is over, whole or broken: its endpoint and the breaker have the request off their counts. */
  private bodyOver(): void {
    if (!this.streaming) return;
    this.streaming = false;
    this.tried!.inflight--;
    this.dest.breaker.release("requests");
  }
}

function overflow(dest: Destination, reason: OverflowReason): ErrorParts {
  return errorParts("overflow", `${dest.name}: ${reason.replace(/-/g, " ")} reached`, { "x-mesh-overflow": reason });
}
