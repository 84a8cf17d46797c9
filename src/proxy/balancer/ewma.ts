import type { Clock, Random } from "../../core/clock.ts";
import type { Balancer, Endpoint, PickContext } from "../endpoint.ts";
import { WeightedSampler, weightOf } from "./sample.ts";

export const DEFAULT_EWMA_DECAY_MS = 10_000;

/** Latency assumed when no candidate has a sample yet; any positive value works, it only has to let inflight count. */
const UNKNOWN_MS = 1;
/** Added to every latency so inflight still separates endpoints whose estimate has decayed to ~0. */
const FLOOR_MS = 1e-6;

/**
 * Records one response latency in the endpoint's peak-EWMA (Finagle / Linkerd style): a
 * sample above the estimate replaces it at once, so a slowing endpoint is avoided right away;
 * a lower one pulls the estimate towards it by 1 - exp(-elapsed/decay), so recovery is
 * trusted gradually and in proportion to time rather than to request count.
 */
export function recordLatency(endpoint: Endpoint, ms: number, clock: Clock, decayMs = DEFAULT_EWMA_DECAY_MS): void {
  const now = clock.now();
  if (ms > endpoint.ewmaMs) {
    endpoint.ewmaMs = ms;
  } else {
    const w = Math.exp(-Math.max(now - endpoint.ewmaAt, 0) / decayMs);
    endpoint.ewmaMs = endpoint.ewmaMs * w + ms * (1 - w);
  }
  endpoint.ewmaAt = now;
}

/**
 * Latency-aware power of two choices: draw two endpoints (weighted) and take the lower cost
 * ewma × (inflight + 1), divided by weight. Multiplying by inflight + 1 accounts for queueing
 * already committed to an endpoint, so the fastest one isn't piled on.
 *
 * When reading, an estimate decays towards zero with the time since its last sample (as
 * Finagle and Linkerd do): an endpoint that was slow once and then stopped getting traffic
 * is eventually probed again instead of being shunned forever on a stale number.
 *
 * An endpoint with no sample yet (ewmaMs 0) costs like the average of those that have one,
 * so a newly added endpoint gets a fair share at once and learns its own latency.
 */
export class EwmaBalancer implements Balancer {
  private readonly sampler: WeightedSampler;

  constructor(
    private readonly clock: Clock,
    random: Random,
    readonly decayMs = DEFAULT_EWMA_DECAY_MS,
  ) {
    this.sampler = new WeightedSampler(random);
  }

  pick(candidates: readonly Endpoint[], _ctx?: PickContext): Endpoint | undefined {
    const s = this.sampler;
    if (!s.two(candidates)) return undefined;
    const a = s.first!;
    const b = s.second!;
    if (a === b) return a;
    const now = this.clock.now();
    let la = this.latency(a, now);
    let lb = this.latency(b, now);
    if (la < 0 || lb < 0) {
      // Only computed when an unsampled endpoint was drawn, so the usual pick stays O(1).
      const avg = this.average(candidates, now);
      if (la < 0) la = avg;
      if (lb < 0) lb = avg;
    }
    const ca = (la + FLOOR_MS) * (a.inflight + 1);
    const cb = (lb + FLOOR_MS) * (b.inflight + 1);
    // cb / wb < ca / wa, cross-multiplied; ties keep the (weighted) first draw.
    return cb * weightOf(a) < ca * weightOf(b) ? b : a;
  }

  /** The decayed estimate, or -1 when the endpoint has no sample yet. */
  private latency(e: Endpoint, now: number): number {
    if (e.ewmaMs === 0) return -1;
    return e.ewmaMs * Math.exp(-Math.max(now - e.ewmaAt, 0) / this.decayMs);
  }

  private average(candidates: readonly Endpoint[], now: number): number {
    let sum = 0;
    let n = 0;
    for (const e of candidates) {
      if (weightOf(e) === 0) continue;
      const l = this.latency(e, now);
      if (l < 0) continue;
      sum += l;
      n++;
    }
    return n === 0 ? UNKNOWN_MS : sum / n;
  }
}
