import type { Random } from "../../core/clock.ts";
import type { Balancer, Endpoint, PickContext } from "../endpoint.ts";
import { WeightedSampler, weightOf } from "./sample.ts";

/**
 * Power of two choices: draw two distinct endpoints at random (weighted) and send to the one
 * with fewer requests in flight. Two samples avoid the herd that "global least" causes when
 * many proxies see the same stale counts, yet almost match its balance.
 *
 * With unequal weights the comparison is inflight/weight (as Envoy does), so a weight-3
 * endpoint is "as busy" as a weight-1 one only at three times the load. Ties keep the first
 * draw, which was itself weighted: idle endpoints still split traffic by weight.
 */
export class LeastRequestBalancer implements Balancer {
  private readonly sampler: WeightedSampler;

  constructor(random: Random) {
    this.sampler = new WeightedSampler(random);
  }

  pick(candidates: readonly Endpoint[], _ctx?: PickContext): Endpoint | undefined {
    const s = this.sampler;
    if (!s.two(candidates)) return undefined;
    const a = s.first!;
    const b = s.second!;
    // b.inflight / wb < a.inflight / wa, cross-multiplied to avoid division.
    return b.inflight * weightOf(a) < a.inflight * weightOf(b) ? b : a;
  }
}
