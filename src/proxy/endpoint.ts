/**
 * An endpoint is one address of a destination service, with the live counters the
 * balancers and outlier detection read. One object per endpoint for the lifetime of
 * a config snapshot, so counters are plain field updates on the hot path.
 */
import { hostPort } from "../core/ip-address.ts";

export interface EndpointSpec {
  address: string;
  port: number;
  /** Relative share of traffic; 0 takes none. */
  weight: number;
  zone?: string;
}

export class Endpoint {
  readonly key: string;
  /** Requests sent and not yet answered. */
  inflight = 0;
  /** Exponentially weighted moving average of latency, ms; 0 until the first sample. */
  ewmaMs = 0;
  /** Clock time of the last EWMA update, for decay. */
  ewmaAt = 0;
  /** While ejected by outlier detection, the clock time it returns; 0 when not ejected. */
  ejectedUntil = 0;

  constructor(readonly spec: EndpointSpec) {
    this.key = hostPort(spec.address, spec.port);
  }

  get weight(): number {
    return this.spec.weight;
  }
}

/** What a balancer may look at to choose: the request's headers, for hashing. */
export interface PickContext {
  header(name: string): string | null;
}

export interface Balancer {
  /** Picks among `candidates` (already filtered to healthy, weight > 0); undefined if none. */
  pick(candidates: readonly Endpoint[], ctx: PickContext): Endpoint | undefined;
}
