/**
 * Envoy-style circuit breaking: concurrency limits per destination, not a
 * failure-rate breaker. When a limit is reached new work is refused at once
 * (fail fast, with a reason for the `x-mesh-overflow` header) instead of queueing
 * behind a destination that is already saturated.
 *
 * Usage: `tryAcquire(kind)` before the work; on `true`, exactly one `release(kind)`
 * when it ends (finally). Counters cannot tell *which* holder releases, so a double
 * release while others still hold a slot is undetectable here: the caller keeps a
 * per-request "holding" flag. What is guarded is underflow (release at zero), which
 * is ignored and counted in `misuses` so the bug shows in metrics instead of
 * silently raising the effective limit.
 */

export type ResourceKind = "connections" | "pending" | "requests" | "retries";

/** Short tokens for the `x-mesh-overflow` response header. */
export type OverflowReason = "max-connections" | "max-pending-requests" | "max-requests" | "max-retries";

export interface CircuitBreakerLimits {
  /** Open upstream connections. */
  maxConnections: number;
  /** Requests waiting for a connection (queued in the pool). */
  maxPendingRequests: number;
  /** Requests in flight. */
  maxRequests: number;
  /** Retries in flight: a hard cap beside the retry budget, which already ties retries to traffic. */
  maxRetries: number;
}

/**
 * Envoy's defaults, except retries: Envoy's 3 fails requests whenever a few callers
 * meet a dying instance at once (Istio raises it for that reason); the retry budget is
 * what keeps retries from multiplying load.
 */
export const DEFAULT_CIRCUIT_BREAKER_LIMITS: Readonly<CircuitBreakerLimits> = Object.freeze({
  maxConnections: 1024,
  maxPendingRequests: 1024,
  maxRequests: 1024,
  maxRetries: 1024,
});

export const RESOURCE_KINDS: readonly ResourceKind[] = Object.freeze(["connections", "pending", "requests", "retries"]);

// Kinds index small fixed arrays: no Map and no allocation on the hot path.
const INDEX: Readonly<Record<ResourceKind, number>> = { connections: 0, pending: 1, requests: 2, retries: 3 };
const REASONS: readonly OverflowReason[] = ["max-connections", "max-pending-requests", "max-requests", "max-retries"];

export class CircuitBreaker {
  /** Shared with the breaker this one continues (continuing()): what is held, whichever of them it was taken from. */
  private used = new Int32Array(4);
  private readonly limit = new Int32Array(4);
  private readonly overflowed = new Float64Array(4);
  /** Releases with nothing held: a caller bug, ignored and counted. */
  misuses = 0;

  constructor(limits: CircuitBreakerLimits = DEFAULT_CIRCUIT_BREAKER_LIMITS) {
    this.setLimits(limits);
  }

  /**
   * A breaker with `limits` that goes on counting what `previous` holds: a destination
   * rebuilt (new certificates, a new policy) must not start from zero while the connections
   * and requests of the old one are still open. Each holder releases on the breaker it
   * acquired from; both count the same slots.
   */
  static continuing(previous: CircuitBreaker, limits: CircuitBreakerLimits): CircuitBreaker {
    const next = new CircuitBreaker(limits);
    next.used = previous.used;
    return next;
  }

  /**
   * New limits apply to new acquisitions only; if usage is above a lowered limit it
   * drains naturally (nothing in flight is cut off).
   */
  setLimits(limits: CircuitBreakerLimits): void {
    this.limit[0] = clampLimit(limits.maxConnections);
    this.limit[1] = clampLimit(limits.maxPendingRequests);
    this.limit[2] = clampLimit(limits.maxRequests);
    this.limit[3] = clampLimit(limits.maxRetries);
  }

  /** Takes one slot of `kind`, or returns the refusal reason. */
  tryAcquire(kind: ResourceKind): true | OverflowReason {
    const i = INDEX[kind];
    if (this.used[i]! >= this.limit[i]!) {
      this.overflowed[i]! += 1;
      return REASONS[i]!;
    }
    this.used[i]! += 1;
    return true;
  }

  /** Returns one slot of `kind`; false (and `misuses`+1) if none was held. */
  release(kind: ResourceKind): boolean {
    const i = INDEX[kind];
    if (this.used[i]! <= 0) {
      this.misuses += 1;
      return false;
    }
    this.used[i]! -= 1;
    return true;
  }

  /** Slots of `kind` currently held. */
  usage(kind: ResourceKind): number {
    return this.used[INDEX[kind]]!;
  }

  /** Slots of `kind` still free (0 when over a lowered limit). */
  remaining(kind: ResourceKind): number {
    const i = INDEX[kind];
    return Math.max(0, this.limit[i]! - this.used[i]!);
  }

  /** Refusals of `kind` since creation (Envoy's `*_overflow` counters). */
  overflows(kind: ResourceKind): number {
    return this.overflowed[INDEX[kind]]!;
  }

  /**
   * Whether the next acquisition of `kind` (or of any kind, when omitted) would be
   * refused, for the "open circuits" gauge. A limit of 0 is always open, by design:
   * that resource is switched off.
   */
  isOpen(kind?: ResourceKind): boolean {
    if (kind !== undefined) {
      const i = INDEX[kind];
      return this.used[i]! >= this.limit[i]!;
    }
    for (let i = 0; i < 4; i++) if (this.used[i]! >= this.limit[i]!) return true;
    return false;
  }
}

/** Limits are whole, non-negative and fit the Int32 counters; NaN means "none allowed". */
function clampLimit(n: number): number {
  if (!(n > 0)) return 0;
  return Math.min(Math.floor(n), 0x7fffffff);
}
