/**
 * Zone-aware routing, as Envoy's locality priorities (and Istio's locality failover): a
 * caller that knows its zone sends to the endpoints of its own zone while enough of them
 * are healthy, and spills to the others as they are ejected. Traffic kept in the zone is
 * min(1, 1.4 × healthy share of the zone's endpoints): with Envoy's overprovisioning
 * factor, a zone at ≥ 72% health keeps all of its callers' traffic, and one with none
 * left sends everything elsewhere.
 */
import type { DestinationPolicySpec } from "../config/kinds/destination-policy.ts";
import type { Endpoint } from "./endpoint.ts";
import type { OutlierDetector } from "./resilience/outlier.ts";

const OVERPROVISIONING = 1.4;

/** A destination's endpoints split by the caller's zone; fixed per endpoint list, so the outlier detector's cache of healthy sets holds. */
export interface ZoneSplit {
  local: readonly Endpoint[];
  remote: readonly Endpoint[];
}

/**
 * The split for a caller in `zone`, or undefined where zones change nothing: a caller
 * without a zone, a policy that turns them off or hashes on a ring (every caller must put
 * a key on the same endpoint), or endpoints all in the caller's zone or none in it.
 */
export function zoneSplit(endpoints: readonly Endpoint[], zone: string | undefined, lb: DestinationPolicySpec["loadBalancer"]): ZoneSplit | undefined {
  if (zone === undefined || !lb.zoneAware || lb.type === "ring-hash") return undefined;
  const local = endpoints.filter((e) => e.spec.zone === zone);
  if (local.length === 0 || local.length === endpoints.length) return undefined;
  return { local, remote: endpoints.filter((e) => e.spec.zone !== zone) };
}

/** The endpoints a request chooses among: the caller's zone's healthy ones, or, for the share spilled, the others'. */
export function zoneCandidates(split: ZoneSplit, outlier: OutlierDetector, random: () => number): readonly Endpoint[] {
  const local = outlier.healthy(split.local);
  const kept = (OVERPROVISIONING * local.length) / split.local.length;
  if (kept >= 1 || (kept > 0 && random() < kept)) return local;
  const remote = outlier.healthy(split.remote);
  return remote.length > 0 ? remote : local;
}
