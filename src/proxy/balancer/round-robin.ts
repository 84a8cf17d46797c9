import type { Balancer, Endpoint, PickContext } from "../endpoint.ts";
import { weightOf } from "./sample.ts";

/** Mutable box so a pick updates a number in place instead of re-setting the WeakMap. */
interface Slot {
  current: number;
}

/**
 * nginx's smooth weighted round robin: every pick adds each endpoint's weight to its current
 * weight, takes the largest, and subtracts the total from the winner. Over one cycle each
 * endpoint is picked exactly in proportion to its weight, and heavy endpoints are interleaved
 * (5:1:1 → a a b a c a a) rather than sent in bursts.
 *
 * State is keyed by Endpoint object, not by index, so ejecting or adding an endpoint between
 * picks leaves everyone else's position untouched. A WeakMap (rather than a field on Endpoint)
 * keeps balancers for different destinations independent and lets endpoints of an old config
 * snapshot be collected.
 */
export class RoundRobinBalancer implements Balancer {
  private readonly slots = new WeakMap<Endpoint, Slot>();

  pick(candidates: readonly Endpoint[], _ctx?: PickContext): Endpoint | undefined {
    let total = 0;
    let best: Endpoint | undefined;
    let bestSlot: Slot | undefined;
    for (const e of candidates) {
      const w = weightOf(e);
      if (w === 0) continue;
      let slot = this.slots.get(e);
      if (slot === undefined) {
        // New endpoints start at 0 like nginx's; the allocation happens once per endpoint.
        slot = { current: 0 };
        this.slots.set(e, slot);
      }
      slot.current += w;
      total += w;
      // Strict ">" so ties go to the earliest candidate, which makes the sequence deterministic.
      if (bestSlot === undefined || slot.current > bestSlot.current) {
        best = e;
        bestSlot = slot;
      }
    }
    if (bestSlot !== undefined) bestSlot.current -= total;
    return best;
  }
}
