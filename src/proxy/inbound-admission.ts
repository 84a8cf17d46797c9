/**
 * What every inbound request passes before the service sees it, on the raw listener and
 * on the loopback server behind a WebSocket tunnel alike: its target in normal form (the
 * form forwarded, so the form rules match), then the service's authorization policies.
 */
import { normalTarget, PathRefusal } from "../core/normal-path.ts";
import type { Authorizer } from "./authorization.ts";
import { errorParts, type ErrorParts } from "./errors.ts";
import type { ProxyMetrics } from "./metrics.ts";
import { peerService } from "./peer-service.ts";

/** The target to forward, or the answer that refuses the request (counted here); arguments as Authorizer.check takes them. */
export function admitInbound(
  metrics: ProxyMetrics,
  authorizer: Authorizer | undefined,
  caller: string,
  method: string,
  sentTarget: string,
  fields: readonly string[],
  dropped: readonly string[],
): string | ErrorParts {
  const target = normalTarget(sentTarget);
  if (target instanceof PathRefusal) {
    metrics.refused.inc({ direction: "inbound", reason: "path" });
    return errorParts("bad-request", target.detail);
  }
  const denial = authorizer?.check(caller, method, target, fields, dropped);
  if (denial === undefined) return target;
  metrics.denied.inc({ peer: peerService(caller), policy: denial.policy });
  return errorParts("forbidden", denial.detail);
}
