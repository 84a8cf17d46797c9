/**
 * What every inbound request passes before the service sees it, on the raw listener and
 * on the loopback server behind a WebSocket tunnel alike: its target in normal form (the
 * form forwarded, so the form rules match), the service's authorization policies, then
 * its rate limits.
 */
import { normalTarget, PathRefusal } from "../core/normal-path.ts";
import type { Authorizer } from "./authorization.ts";
import { errorParts, type ErrorParts } from "./errors.ts";
import type { ProxyMetrics } from "./metrics.ts";
import { peerService } from "./peer-service.ts";
import type { RateLimiter } from "./rate-limit.ts";

/** The policies of the sidecar's own service in force: built per config version. */
export interface InboundPolicies {
  /**
   * Set while the policies are not known (a sidecar following a control plane before its
   * first config is applied): every request is refused with 503 and this reason, rather
   * than let in with no policy in force.
   */
  pending?: string;
  /** Undefined: every caller is let in. */
  authorizer?: Authorizer;
  /** With the dry-run policies enforced too: what it would refuse is counted, not refused. */
  dryRun?: Authorizer;
  /** Undefined: no limit. */
  limiter?: RateLimiter;
}

/** The target to forward, or the answer that refuses the request (counted here); arguments as Authorizer.check takes them. */
export function admitInbound(
  metrics: ProxyMetrics,
  policies: InboundPolicies,
  caller: string,
  method: string,
  sentTarget: string,
  fields: readonly string[],
  dropped: readonly string[],
): string | ErrorParts {
  if (policies.pending !== undefined) return errorParts("not-ready", policies.pending);
  const target = normalTarget(sentTarget);
  if (target instanceof PathRefusal) {
    metrics.refused.inc({ direction: "inbound", reason: "path" });
    return errorParts("bad-request", target.detail);
  }
  const denial = policies.authorizer?.check(caller, method, target, fields, dropped);
  if (denial !== undefined) {
    metrics.denied.inc({ peer: peerService(caller), policy: denial.policy });
    return errorParts("forbidden", denial.detail);
  }
  const would = policies.dryRun?.check(caller, method, target, fields, dropped);
  if (would !== undefined) metrics.dryRunDenied.inc({ peer: peerService(caller), policy: would.policy });
  const limited = policies.limiter?.admit(caller);
  if (limited === undefined) return target;
  metrics.rateLimited.inc({ peer: peerService(caller), limit: limited.limit });
  return errorParts("rate-limited", `over the ${limited.limit === "total" ? "service's" : "caller's"} rate limit`, { "retry-after": String(limited.retryAfterS) });
}
