import type { Clock, Random } from "../../core/clock.ts";
import type { Balancer } from "../endpoint.ts";
import { EwmaBalancer } from "./ewma.ts";
import { LeastRequestBalancer } from "./least-request.ts";
import { RingHashBalancer } from "./ring-hash.ts";
import { RoundRobinBalancer } from "./round-robin.ts";

export { DEFAULT_EWMA_DECAY_MS, EwmaBalancer, recordLatency } from "./ewma.ts";
export { LeastRequestBalancer } from "./least-request.ts";
export { cookieValue, RingHashBalancer, type RingHashOptions } from "./ring-hash.ts";
export { RoundRobinBalancer } from "./round-robin.ts";

export type BalancerPolicy =
  | { type: "round-robin" }
  | { type: "least-request" }
  /** decayMs should match the one passed to recordLatency. */
  | { type: "ewma"; decayMs?: number }
  | { type: "ring-hash"; header?: string; cookie?: string; minRingSize?: number };

export const DEFAULT_BALANCER_POLICY: BalancerPolicy = { type: "least-request" };

export interface BalancerDeps {
  clock: Clock;
  random: Random;
}

/** One balancer per destination: each keeps its own state (round-robin positions, ring cache). */
export function createBalancer(policy: BalancerPolicy | undefined, deps: BalancerDeps): Balancer {
  const p = policy ?? DEFAULT_BALANCER_POLICY;
  switch (p.type) {
    case "round-robin":
      return new RoundRobinBalancer();
    case "least-request":
      return new LeastRequestBalancer(deps.random);
    case "ewma":
      return new EwmaBalancer(deps.clock, deps.random, p.decayMs);
    case "ring-hash":
      return new RingHashBalancer({ header: p.header, cookie: p.cookie, minRingSize: p.minRingSize }, deps.random);
    default: {
      const unknown: never = p;
      throw new Error(`unknown balancer policy ${JSON.stringify(unknown)}`);
    }
  }
}
