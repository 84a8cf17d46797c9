/**
 * Outlier detection, Envoy's "consecutive errors" flavour: an endpoint that fails N
 * times in a row is ejected from load balancing for a while, longer each time it
 * re-offends. Pure state: it writes `endpoint.ejectedUntil` and reads the clock.
 *
 * What counts as a failure is the caller's call: 5xx responses and connect failures
 * are; 4xx are the client's fault and count as success.
 *
 * Choices, where Envoy differs or is vague:
 *  - Max-ejection: at most floor(total × maxEjectionPercent / 100) endpoints are
 *    ejected at once, but at least 1 when there are ≥ 2 endpoints. A lone endpoint
 *    is never ejected (Envoy would, then "panic route" to it anyway; here ejecting it
 *    would only turn its errors into our own 503s). When ejection is refused the
 *    failure streak is kept, so the next failure retries once room frees up.
 *  - Results arriving while an endpoint is ejected (requests already in flight) are
 *    ignored; the streak restarts from 0 when it returns.
 *  - Multiplier decay: Envoy decrements it every interval without ejection. Here it
 *    is computed lazily at the next ejection: one step per `decayIntervalMs` spent
 *    back in service. So an endpoint that fails again right after returning gets
 *    base×2, base×3…, capped at maxEjectionMs; a long-healthy one starts over at base.
 *  - Ejection is tracked for endpoints given to `setEndpoints`; others are ignored.
 */
import type { Clock } from "../../core/clock.ts";
import type { Endpoint } from "../endpoint.ts";

export interface OutlierConfig {
  consecutiveFailures: number;
  baseEjectionMs: number;
  maxEjectionMs: number;
  maxEjectionPercent: number;
  /** Time back in service that forgives one ejection (Envoy's `interval`, 10 s). */
  decayIntervalMs: number;
}

export const DEFAULT_OUTLIER_CONFIG: Readonly<OutlierConfig> = Object.freeze({
  consecutiveFailures: 5,
  baseEjectionMs: 30_000,
  maxEjectionMs: 300_000,
  maxEjectionPercent: 50,
  decayIntervalMs: 10_000,
});

interface HostState {
  ep: Endpoint;
  failures: number;
  /** Ejections not yet forgiven: the duration multiplier. */
  multiplier: number;
  ejected: boolean;
  /** When it last came back (or was first seen), for decay. */
  returnedAt: number;
}

export class OutlierDetector {
  private hosts = new Map<Endpoint, HostState>();
  private ejectedNow = 0;
  /** Earliest `ejectedUntil` among ejected hosts; Infinity when none, so checks are one compare. */
  private nextReturn = Infinity;
  /** Bumped on every eject/return; invalidates the `healthy()` cache. */
  private version = 0;
  private readonly cache = new WeakMap<readonly Endpoint[], { version: number; out: readonly Endpoint[] }>();
  private readonly maxMultiplier: number;
  /** Ejections performed, ever. */
  totalEjections = 0;
  /** Ejections refused by maxEjectionPercent (Envoy's `ejections_overflow`). */
  overflowEjections = 0;

  constructor(
    private readonly clock: Clock,
    private readonly config: OutlierConfig = DEFAULT_OUTLIER_CONFIG,
  ) {
    // Past this the duration is capped anyway; capping the multiplier keeps decay meaningful.
    this.maxMultiplier = Math.max(1, Math.ceil(config.maxEjectionMs / config.baseEjectionMs));
  }

  /**
   * Replaces the tracked set. State (streak, multiplier, ejection) carries over by
   * `key`, also onto new objects for the same address, so a config push does not
   * readmit a bad endpoint. Removed endpoints' state is dropped.
   */
  setEndpoints(list: readonly Endpoint[]): void {
    const byKey = new Map<string, HostState>();
    for (const s of this.hosts.values()) byKey.set(s.ep.key, s);
    const next = new Map<Endpoint, HostState>();
    const now = this.clock.now();
    for (const ep of list) {
      if (next.has(ep)) continue;
      const old = byKey.get(ep.key);
      // Each old state goes to one endpoint only, even if the list repeats an address.
      if (old !== undefined) byKey.delete(ep.key);
      // The detector owns `ejectedUntil`: copy it onto a replacement, clear it on a newcomer.
      if (old === undefined || old.ep !== ep) ep.ejectedUntil = old?.ejected ? old.ep.ejectedUntil : 0;
      const s = old ?? { ep, failures: 0, multiplier: 0, ejected: false, returnedAt: now };
      s.ep = ep;
      next.set(ep, s);
    }
    this.hosts = next;
    this.recount();
  }

  /** Records one request's result for `endpoint`. Allocation-free. */
  onResult(endpoint: Endpoint, ok: boolean): void {
    const s = this.hosts.get(endpoint);
    if (s === undefined) return;
    // The common case, with nothing ejected and nothing to eject: no clock read.
    if (ok && this.ejectedNow === 0) {
      s.failures = 0;
      return;
    }
    const now = this.clock.now();
    if (now >= this.nextReturn) this.readmitDue(now);
    if (s.ejected) return;
    if (ok) {
      s.failures = 0;
      return;
    }
    s.failures += 1;
    if (s.failures >= this.config.consecutiveFailures) this.tryEject(s, now);
  }

  /** True unless the endpoint is ejected and its time has not yet passed. */
  isAvailable(endpoint: Endpoint): boolean {
    return endpoint.ejectedUntil === 0 || endpoint.ejectedUntil <= this.clock.now();
  }

  /**
   * `endpoints` without the ejected ones. Returns the same array when nothing is
   * ejected, and a cached filtered array while the ejected set is unchanged, so the
   * per-request path does not allocate. Treat the result as read-only, and pass
   * snapshot arrays: the cache is keyed by array identity, so in-place edits go unseen.
   */
  healthy(endpoints: readonly Endpoint[]): readonly Endpoint[] {
    // Nothing ejected, nothing to readmit: no clock read. Otherwise, readmitting may empty the set.
    if (this.ejectedNow === 0) return endpoints;
    const now = this.clock.now();
    if (now >= this.nextReturn) this.readmitDue(now);
    if (this.ejectedNow === 0) return endpoints;
    const hit = this.cache.get(endpoints);
    if (hit !== undefined && hit.version === this.version) return hit.out;
    // A loop, not filter with a closure: a closure over `this` would cost every call a scope object.
    const out: Endpoint[] = [];
    for (const ep of endpoints) if (this.isAvailable(ep)) out.push(ep);
    this.cache.set(endpoints, { version: this.version, out });
    return out;
  }

  /** Endpoints ejected right now (gauge). */
  get currentlyEjected(): number {
    const now = this.clock.now();
    if (now >= this.nextReturn) this.readmitDue(now);
    return this.ejectedNow;
  }

  /** Maximum endpoints that may be ejected at once, per the rule in the header comment. */
  maxEjected(): number {
    const total = this.hosts.size;
    if (total < 2) return 0;
    return Math.max(1, Math.floor((total * this.config.maxEjectionPercent) / 100));
  }

  private tryEject(s: HostState, now: number): void {
    if (this.ejectedNow >= this.maxEjected()) {
      this.overflowEjections += 1;
      return;
    }
    const forgiven = Math.floor((now - s.returnedAt) / this.config.decayIntervalMs);
    s.multiplier = Math.min(this.maxMultiplier, Math.max(0, s.multiplier - forgiven) + 1);
    const until = now + Math.min(this.config.baseEjectionMs * s.multiplier, this.config.maxEjectionMs);
    s.ep.ejectedUntil = until;
    s.ejected = true;
    s.failures = 0;
    this.ejectedNow += 1;
    this.totalEjections += 1;
    this.version += 1;
    if (until < this.nextReturn) this.nextReturn = until;
  }

  /** Readmits every endpoint whose time has passed; O(endpoints), runs only when one is due. */
  private readmitDue(now: number): void {
    for (const s of this.hosts.values()) {
      if (s.ejected && s.ep.ejectedUntil <= now) {
        s.returnedAt = s.ep.ejectedUntil;
        s.ep.ejectedUntil = 0;
        s.ejected = false;
        s.failures = 0;
      }
    }
    this.recount();
  }

  private recount(): void {
    let n = 0;
    let next = Infinity;
    for (const s of this.hosts.values()) {
      if (!s.ejected) continue;
      n += 1;
      if (s.ep.ejectedUntil < next) next = s.ep.ejectedUntil;
    }
    this.ejectedNow = n;
    this.nextReturn = next;
    this.version += 1;
  }
}
