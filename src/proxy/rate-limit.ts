/**
 * The RateLimitPolicy of this sidecar's own service: token buckets, one for all callers
 * and one per caller identity, checked on the inbound after authorization (so callers that
 * are refused anyway take nothing from the others' share). A request is let in only if
 * every bucket it draws on has a token, and only then takes them. Buckets outlive config
 * versions that leave the policy as it was, so a config push does not refill them.
 */
import type { RateLimitPolicy } from "../config/kinds/rate-limit-policy.ts";
import { eventNow } from "../core/clock.ts";
import { callerMatches, compileCallers, type CallerMatch } from "./caller-match.ts";
import type { PolicySubject } from "./authorization.ts";

/** Which limit refused a request, and when to try again. */
export interface Limited {
  limit: "total" | "caller";
  retryAfterS: number;
}

interface Rate {
  requestsPerSecond: number;
  burst?: number;
}

/** Callers with a bucket of their own at once; past it the buckets start over (callers hold mesh certificates: few). */
const CALLERS_REMEMBERED = 10_000;

class TokenBucket {
  private tokens: number;
  private readonly perMs: number;
  private readonly burst: number;

  constructor(rate: Rate, private last: number) {
    this.perMs = rate.requestsPerSecond / 1000;
    this.burst = rate.burst ?? Math.max(1, Math.floor(rate.requestsPerSecond));
    this.tokens = this.burst;
  }

  /** Refills for the time passed; whether a token is there (none is taken). */
  has(now: number): boolean {
    if (now > this.last) {
      this.tokens = Math.min(this.burst, this.tokens + (now - this.last) * this.perMs);
      this.last = now;
    }
    return this.tokens >= 1;
  }

  take(): void {
    this.tokens -= 1;
  }

  /** Whole seconds until a token is there, at least 1 (Retry-After). */
  retryAfterS(): number {
    return Math.max(1, Math.ceil((1 - this.tokens) / this.perMs / 1000));
  }
}

export class RateLimiter {
  private readonly total: TokenBucket | undefined;
  /** Caller → its bucket, or null when no per-caller limit applies to it. */
  private readonly callers = new Map<string, TokenBucket | null>();
  private readonly overrides: { from: CallerMatch; rate: Rate }[];

  constructor(
    /** The policy it enforces, for /config_dump and to tell an unchanged one. */
    readonly source: RateLimitPolicy,
    trustDomain: string,
    private readonly now: () => number = eventNow,
  ) {
    const spec = source.spec;
    this.total = spec.total && new TokenBucket(spec.total, now());
    this.overrides = (spec.overrides ?? []).map((o) => ({ from: compileCallers(o.from, source.metadata.namespace, trustDomain), rate: o }));
  }

  /** Undefined when `caller`'s request may pass (its tokens are taken); otherwise which limit it met. */
  admit(caller: string): Limited | undefined {
    const now = this.now();
    let own = this.callers.get(caller);
    if (own === undefined) {
      if (this.callers.size >= CALLERS_REMEMBERED) this.callers.clear();
      own = this.bucketOf(caller, now);
      this.callers.set(caller, own);
    }
    if (own !== null && !own.has(now)) return { limit: "caller", retryAfterS: own.retryAfterS() };
    const total = this.total;
    if (total !== undefined && !total.has(now)) return { limit: "total", retryAfterS: total.retryAfterS() };
    own?.take();
    total?.take();
    return undefined;
  }

  private bucketOf(caller: string, now: number): TokenBucket | null {
    const rate = this.overrides.find((o) => callerMatches(o.from, caller))?.rate ?? this.source.spec.perCaller;
    return rate ? new TokenBucket(rate, now) : null;
  }
}

/**
 * The limiter of `subject`'s inbound, or undefined when no policy is for it. `previous` is
 * kept, buckets and all, when its policy is unchanged.
 */
export function rateLimiterFor(policies: readonly RateLimitPolicy[], subject: PolicySubject, previous?: RateLimiter): RateLimiter | undefined {
  const own = policies.find((p) => p.metadata.namespace === subject.namespace && p.spec.service === subject.service);
  if (own === undefined) return undefined;
  if (previous && JSON.stringify(previous.source) === JSON.stringify(own)) return previous;
  return new RateLimiter(own, subject.trustDomain);
}
