/**
 * Retry decisions (Envoy / Linkerd style), as pure functions plus a time-bucketed
 * retry budget. No I/O: the proxy asks "may I retry?" and "how long do I wait?".
 *
 * What the caller owns, because only it knows:
 *  - Replayability: a request whose body was already streamed upstream and not
 *    buffered cannot be sent again, whatever the outcome says. Check that first.
 *  - The overall deadline: a retry whose backoff outlives the request timeout is
 *    pointless; `shouldRetry` only knows about per-try outcomes.
 *  - Budget and breaker: a "yes" here still needs `RetryBudget.tryWithdraw()` and
 *    the circuit breaker's `retries` slot.
 */
import type { Clock, Random } from "../../core/clock.ts";

export interface HeaderReader {
  get(name: string): string | null;
}

/** RFC 9110 §9.2.2 idempotent methods. POST and PATCH are not. Methods are case-sensitive. */
const IDEMPOTENT_METHODS: ReadonlySet<string> = new Set(["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"]);

/**
 * Whether a request may be sent twice without harm. A non-idempotent request becomes
 * retryable when the client supplies an Idempotency-Key (IETF httpapi draft): the
 * server then deduplicates. An empty key dedupes nothing, so it does not count.
 * The header is looked up lower-case (Fetch `Headers` is case-insensitive anyway).
 */
export function isRetryableRequest(method: string, headers: HeaderReader): boolean {
  if (IDEMPOTENT_METHODS.has(method)) return true;
  const key = headers.get("idempotency-key");
  return key !== null && key !== "";
}

export interface RetryPolicy {
  /** Maximum number of retries (not counting the original try). */
  attempts: number;
  retryOn: {
    /** TCP/TLS connect failed: the request never left, so always safe. */
    connectFailure: boolean;
    /** Upstream refused the stream (HTTP/2 REFUSED_STREAM, GOAWAY above our id): never processed. */
    refused: boolean;
    /** Reset or per-try timeout before any response byte (Envoy's `reset` covers both). */
    reset: boolean;
    /** Response statuses that trigger a retry (the response is discarded, not forwarded). */
    statusCodes: readonly number[];
    /** gRPC statuses (their numbers, as grpc-status carries them) of a trailers-only response that trigger a retry of any call. */
    grpcStatuses: ReadonlySet<string>;
  };
  backoff: { baseMs: number; maxMs: number };
}

export const DEFAULT_RETRY_POLICY: Readonly<RetryPolicy> = Object.freeze({
  attempts: 2,
  retryOn: Object.freeze({ connectFailure: true, refused: true, reset: true, statusCodes: Object.freeze([502, 503, 504]), grpcStatuses: new Set<string>() }),
  backoff: Object.freeze({ baseMs: 25, maxMs: 250 }),
});

export type AttemptOutcome =
  | { kind: "connect-failure" | "refused" | "reset-before-response" | "timeout-before-response" }
  | { kind: "status"; status: number }
  /** A gRPC call answered trailers-only: nothing reached the client but the status. */
  | { kind: "grpc-status"; grpcStatus: string }
  /** Bytes already reached the client: a retry would splice two responses. Never retried. */
  | { kind: "response-started" };

/**
 * Whether to retry after a failed try.
 * @param attempt retries already made for this request (0 after the original try failed).
 * @param idempotent result of `isRetryableRequest`. Connect failures and refused streams
 *   are retried even for non-idempotent requests, because the upstream never saw them;
 *   everything else (reset, timeout, status) may have had effects, so it needs idempotency.
 */
export function shouldRetry(policy: RetryPolicy, attempt: number, outcome: AttemptOutcome, idempotent = true): boolean {
  if (attempt >= policy.attempts) return false;
  const on = policy.retryOn;
  switch (outcome.kind) {
    case "connect-failure":
      return on.connectFailure;
    case "refused":
      return on.refused;
    case "reset-before-response":
    case "timeout-before-response":
      return idempotent && on.reset;
    case "status":
      return idempotent && on.statusCodes.includes(outcome.status);
    case "grpc-status":
      // The policy listing it says the service's calls are safe to repeat on it: no idempotency asked.
      return on.grpcStatuses.has(outcome.grpcStatus);
    case "response-started":
      return false;
  }
}

/**
 * Full-jitter exponential backoff (AWS architecture blog): uniform in
 * [0, min(maxMs, baseMs·2^attempt)). Full jitter spreads synchronized clients best.
 * @param attempt retries already made (0 before the first retry → up to baseMs).
 */
export function backoffMs(policy: Pick<RetryPolicy, "backoff">, attempt: number, random: Random): number {
  // 2 ** large → Infinity, which min() clamps, so no overflow guard is needed.
  const cap = Math.min(policy.backoff.maxMs, policy.backoff.baseMs * 2 ** Math.max(0, attempt));
  return random() * cap;
}

export interface RetryBudgetConfig {
  /** Retries allowed per original request in the window (0.2 = 20%). */
  ratio: number;
  /** Retries always allowed per second regardless of traffic, so low-traffic services can retry. */
  minRetriesPerSecond: number;
  windowMs: number;
  /** Granularity of ageing: traffic leaves the window one bucket at a time. */
  buckets: number;
}

export const DEFAULT_RETRY_BUDGET: Readonly<RetryBudgetConfig> = Object.freeze({
  ratio: 0.2,
  minRetriesPerSecond: 10,
  windowMs: 10_000,
  buckets: 10,
});

// Guards ratio×requests against float error (0.29 × 100 = 28.999999999999996).
const EPSILON = 1e-9;

/**
 * Caps retries to a share of traffic so retries cannot multiply load during an
 * outage (Finagle / Linkerd / tower `TpsBudget` semantics): over the window,
 *   retries ≤ ratio × requests + minRetriesPerSecond × windowSeconds.
 * Call `onRequest()` for original requests only; retries do not earn budget.
 * Counts live in a ring of time buckets, with running totals so every call is O(1)
 * amortised and allocation-free. The effective window is (buckets-1..buckets)×bucketMs:
 * a bucket is dropped whole when the clock reaches the slot it occupied.
 */
export class RetryBudget {
  private readonly requests: Float64Array;
  private readonly retries: Float64Array;
  private readonly bucketMs: number;
  private readonly reserve: number;
  private epoch: number;
  private totalRequests = 0;
  private totalRetries = 0;

  constructor(
    private readonly clock: Clock,
    private readonly config: RetryBudgetConfig = DEFAULT_RETRY_BUDGET,
  ) {
    const n = Math.max(1, Math.floor(config.buckets));
    this.requests = new Float64Array(n);
    this.retries = new Float64Array(n);
    this.bucketMs = config.windowMs / n;
    this.reserve = config.minRetriesPerSecond * (config.windowMs / 1000);
    this.epoch = Math.floor(clock.now() / this.bucketMs);
  }

  onRequest(): void {
    const i = this.advance();
    this.requests[i]! += 1;
    this.totalRequests += 1;
  }

  /** Consumes one retry if the budget allows; false means "do not retry". */
  tryWithdraw(): boolean {
    const i = this.advance();
    if (this.totalRetries + 1 > this.config.ratio * this.totalRequests + this.reserve + EPSILON) return false;
    this.retries[i]! += 1;
    this.totalRetries += 1;
    return true;
  }

  /** Retries still allowed now, for metrics (floored). */
  remaining(): number {
    this.advance();
    return Math.max(0, Math.floor(this.config.ratio * this.totalRequests + this.reserve + EPSILON - this.totalRetries));
  }

  windowRequests(): number {
    this.advance();
    return this.totalRequests;
  }

  windowRetries(): number {
    this.advance();
    return this.totalRetries;
  }

  /** Moves to the bucket for "now", clearing the ones skipped over; returns its index. */
  private advance(): number {
    const n = this.requests.length;
    const epoch = Math.floor(this.clock.now() / this.bucketMs);
    // A clock going backwards keeps using the current bucket rather than corrupting totals.
    if (epoch > this.epoch) {
      if (epoch - this.epoch >= n) {
        this.requests.fill(0);
        this.retries.fill(0);
        this.totalRequests = 0;
        this.totalRetries = 0;
      } else {
        for (let e = this.epoch + 1; e <= epoch; e++) {
          const j = slot(e, n);
          this.totalRequests -= this.requests[j]!;
          this.totalRetries -= this.retries[j]!;
          this.requests[j] = 0;
          this.retries[j] = 0;
        }
      }
      this.epoch = epoch;
    }
    return slot(this.epoch, n);
  }
}

/** Non-negative modulo, so a clock with negative times still indexes the ring. */
function slot(epoch: number, n: number): number {
  return ((epoch % n) + n) % n;
}
