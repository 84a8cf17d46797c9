/**
 * The RateLimitPolicy of this sidecar's own service: token buckets, one for all callers
 * and one per caller identity, checked on the inbound after authorization (so callers that
 * are refused anyway take nothing from the others' share). A request is let in only if
 * every bucket it draws on has a token, and only then takes them. Buckets outlive config
 * versions that leave the policy and the instance count as they were, so a config push
 * does not refill them.
 *
 * With `scope: service` each sidecar enforces 1/N of every rate and burst, N the service's
 * instances in the config: the control plane offers the healthy ones, which are the ones
 * callers send to, so the shares add up to the figures while callers spread their calls
 * evenly (least-request, round robin); an instance that gets more than its share (ring
 * hash, a zone with fewer instances) refuses sooner. No request waits on a shared
 * counter, and a sidecar cut off from the control plane keeps its last share. When the
 * count changes, each bucket keeps how full it was, scaled to the new share: instances
 * coming and going must not refill every bucket.
 */
import type { RateLimitPolicy } from "../config/kinds/rate-limit-policy.ts";
import type { Service } from "../config/kinds/service.ts";
import { eventNow } from "../core/clock.ts";
import { callerMatches, compileCallers, type CallerMatch } from "./caller-match.ts";
import type { PolicySubject } from "./authorization.ts";
import { ownService } from "./own-service.ts";

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

  /** `share`: the part of the rate this sidecar enforces (1, or 1/N of a service's); `full`: the part of the burst it starts with. */
  constructor(
    private readonly rate: Rate,
    private last: number,
    share: number,
    full = 1,
  ) {
    this.perMs = (rate.requestsPerSecond * share) / 1000;
    this.burst = Math.max(1, Math.floor((rate.burst ?? Math.max(1, Math.floor(rate.requestsPerSecond))) * share));
    this.tokens = this.burst * full;
  }

  /** The same bucket for another share, as full (in part of its burst) as this one is now. */
  reshared(share: number, now: number): TokenBucket {
    this.has(now);
    return new TokenBucket(this.rate, now, share, Math.max(0, this.tokens) / this.burst);
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

  /** The part of each figure this sidecar enforces: 1, or 1/instances with scope: service. */
  private readonly share: number;

  constructor(
    /** The policy it enforces, for /config_dump and to tell an unchanged one. */
    readonly source: RateLimitPolicy,
    trustDomain: string,
    private readonly now: () => number = eventNow,
    /** The service's instances, for scope: service (at least 1). */
    readonly instances = 1,
    /** The limiter of the same policy for another count, whose buckets this one carries on. */
    before?: RateLimiter,
  ) {
    const spec = source.spec;
    this.share = spec.scope === "service" ? 1 / Math.max(1, instances) : 1;
    const at = now();
    this.total = before?.total ? before.total.reshared(this.share, at) : spec.total && new TokenBucket(spec.total, at, this.share);
    this.overrides = (spec.overrides ?? []).map((o) => ({ from: compileCallers(o.from, source.metadata.namespace, trustDomain), rate: o }));
    if (before !== undefined) for (const [caller, bucket] of before.callers) this.callers.set(caller, bucket && bucket.reshared(this.share, at));
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
    return rate ? new TokenBucket(rate, now, this.share) : null;
  }
}

/**
 * The limiter of `subject`'s inbound, or undefined when no policy is for it. `instances`:
 * the service's, as its own Service's endpoints in the config count them (at least 1).
 * `previous` is kept, buckets and all, when its policy and share are unchanged, and its
 * buckets carried on, as full as they are, when only the share changed.
 */
export function rateLimiterFor(policies: readonly RateLimitPolicy[], subject: PolicySubject, instances: number, previous?: RateLimiter): RateLimiter | undefined {
  const own = policies.find((p) => p.metadata.namespace === subject.namespace && p.spec.service === subject.service);
  if (own === undefined) return undefined;
  const counted = own.spec.scope === "service" ? Math.max(1, instances) : 1;
  const samePolicy = previous !== undefined && JSON.stringify(previous.source) === JSON.stringify(own);
  if (samePolicy && previous.instances === counted) return previous;
  return new RateLimiter(own, subject.trustDomain, eventNow, counted, samePolicy ? previous : undefined);
}

/** The service's instances the config names: its own Service's endpoints that take traffic (weight > 0). */
export function instancesOf(services: readonly Service[], subject: PolicySubject): number {
  return (ownService(services, subject)?.spec.endpoints ?? []).filter((e) => e.weight > 0).length;
}
