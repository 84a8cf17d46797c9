/** Endpoint choice for an upgrade: the destination's balancer over outlier-healthy endpoints. */
import type { Destination } from "../destinations.ts";
import type { Endpoint, PickContext } from "../endpoint.ts";

export function pickHealthy(dest: Destination, ctx: PickContext): Endpoint | undefined {
  return dest.balancer.pick(dest.outlier.healthy(dest.endpoints), ctx);
}
