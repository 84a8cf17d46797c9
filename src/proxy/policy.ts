/** Turns a DestinationPolicy's manifest fields into the settings of the proxy's own pieces. */
import type { DestinationPolicySpec } from "../config/kinds/destination-policy.ts";
import type { HTTPRouteRule } from "../config/kinds/http-route.ts";
import type { BalancerPolicy } from "./balancer/index.ts";
import type { OutlierConfig } from "./resilience/outlier.ts";
import { DEFAULT_RETRY_BUDGET, type RetryBudgetConfig, type RetryPolicy } from "./resilience/retry.ts";

export function balancerPolicy(lb: DestinationPolicySpec["loadBalancer"]): BalancerPolicy {
  switch (lb.type) {
    case "ring-hash":
      return { type: "ring-hash", header: lb.hashOn?.header, cookie: lb.hashOn?.cookie, minRingSize: lb.minRingSize };
    case "ewma":
      return { type: "ewma", decayMs: lb.ewmaDecay };
    default:
      return { type: lb.type };
  }
}

/** gRPC's numbers for the statuses a policy may retry on. */
const GRPC_CODES: Record<DestinationPolicySpec["retries"]["grpcStatuses"][number], number> = { cancelled: 1, "deadline-exceeded": 4, "resource-exhausted": 8, internal: 13, unavailable: 14 };

export function retryPolicy(r: DestinationPolicySpec["retries"]): RetryPolicy {
  const on = new Set(r.retryOn);
  return {
    attempts: r.attempts,
    retryOn: { connectFailure: on.has("connect-failure"), refused: on.has("refused"), reset: on.has("reset"), statusCodes: r.statusCodes, grpcStatuses: new Set(r.grpcStatuses.map((name) => String(GRPC_CODES[name]))) },
    backoff: { baseMs: r.backoff.base, maxMs: r.backoff.max },
  };
}

/** How one call is made: its deadlines and its retries. */
export interface CallSettings {
  /** From sending until the response head, retries included; 0: none. */
  timeoutMs: number;
  /** One try's, until its response head; 0: none. */
  perTryMs: number;
  retryPolicy: RetryPolicy;
}

/** A destination's call settings, with what a route rule sets in place of its policy's. */
export function callSettings(p: DestinationPolicySpec, rule?: Pick<HTTPRouteRule, "timeouts" | "retries">): CallSettings {
  const own = rule?.retries;
  const retries = own === undefined ? p.retries : { ...p.retries, ...Object.fromEntries(Object.entries(own).filter(([, v]) => v !== undefined)) };
  return {
    timeoutMs: rule?.timeouts?.request ?? p.timeouts.request,
    perTryMs: rule?.timeouts?.backendRequest ?? p.timeouts.perTry,
    retryPolicy: retryPolicy(retries),
  };
}

export function outlierConfig(p: DestinationPolicySpec): OutlierConfig {
  const o = p.outlierDetection;
  return {
    consecutiveFailures: o.consecutiveFailures,
    baseEjectionMs: o.baseEjectionTime,
    maxEjectionMs: o.maxEjectionTime,
    maxEjectionPercent: o.maxEjectionPercent,
    decayIntervalMs: o.interval,
  };
}

export function retryBudgetConfig(r: DestinationPolicySpec["retries"]): RetryBudgetConfig {
  return { ...DEFAULT_RETRY_BUDGET, ratio: r.budget.percent / 100, minRetriesPerSecond: r.budget.minPerSecond };
}
