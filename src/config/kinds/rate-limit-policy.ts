/**
 * RateLimitPolicy: how many requests a service's sidecar lets in per second, in total and
 * per caller (Linkerd's HTTPLocalRateLimitPolicy, Envoy's local rate limit). By default
 * each sidecar counts on its own, so a service of N instances takes up to N times the
 * figures; with `scope: service` the figures are the service's, each sidecar enforcing
 * its share. Past a limit a request gets 429 with Retry-After before it reaches the service.
 */
import { z } from "zod";
import { always, dnsLabel } from "../common";
import { registerKind, type ManifestOf } from "../manifest";
import { Source } from "./authorization-policy";

const MAX_RATE = 1_000_000;
export const RATE_LIMIT_SCOPES = ["sidecar", "service"] as const;

export const Rate = z
  .strictObject({
    requestsPerSecond: z.number().positive().max(MAX_RATE).describe("Requests let in per second, on average."),
    burst: z.int().min(1).max(MAX_RATE).optional().describe("Requests that may arrive at once after a quiet spell; default requestsPerSecond (at least 1)."),
  })
  .describe("A token bucket: refilled at requestsPerSecond, holding at most burst.");

export const RateOverride = z
  .strictObject({
    from: Source.describe("The callers this limit is for, each on its own; the first override that matches a caller applies."),
    requestsPerSecond: Rate.shape.requestsPerSecond,
    burst: Rate.shape.burst,
  })
  .describe("A per-caller limit of its own for some callers.");

export const RateLimitPolicySpec = z
  .strictObject({
    service: dnsLabel("service").optional().describe("The Service, in this namespace, whose sidecars enforce the limits on their inbound; default metadata.name."),
    scope: z
      .enum(RATE_LIMIT_SCOPES)
      .default("sidecar")
      .describe(
        "sidecar: each sidecar lets the figures in on its own, so N instances take up to N times them (default); service: the figures are the whole service's, each of its N instances (its Service's endpoints in the config) letting in 1/N of each rate and burst (at least 1).",
      ),
    total: Rate.optional().describe("All callers together, per sidecar (or for the service, with scope: service)."),
    perCaller: Rate.optional().describe("Each caller identity on its own, per sidecar (or for the service, with scope: service)."),
    overrides: z.array(RateOverride).min(1).optional().describe("Callers with a per-caller limit of their own, instead of perCaller."),
  })
  .superRefine((spec, ctx) => {
    if (spec.total === undefined && spec.perCaller === undefined && spec.overrides === undefined)
      ctx.addIssue({ code: "custom", message: "set total, perCaller or overrides: a policy without a limit limits nothing" });
  }, always)
  .describe("Requests per second a service's sidecars let in, in total and per caller.");

export const RateLimitPolicy = registerKind({
  kind: "RateLimitPolicy",
  spec: RateLimitPolicySpec,
  description: "Requests per second a service's sidecars let in, in total and per caller; past a limit, 429 with Retry-After.",
  resolve: (spec, metadata) => ({ ...spec, service: spec.service ?? metadata.name }),
});
export type RateLimitPolicy = ManifestOf<typeof RateLimitPolicy>;

/** What of a RateLimitPolicy says which service it is for. */
interface ForService {
  metadata: { namespace: string };
  spec: unknown;
}

/**
 * A service takes one RateLimitPolicy (two would leave its sidecars to pick one): each of
 * `items` after the first for its service, with that first, for the caller to word.
 */
export function secondRateLimits<T>(items: readonly T[], policyOf: (item: T) => ForService): { item: T; first: T; service: string }[] {
  const firsts = new Map<string, T>();
  const seconds: { item: T; first: T; service: string }[] = [];
  for (const item of items) {
    const p = policyOf(item);
    const service = `${p.metadata.namespace}/${(p.spec as { service: string }).service}`;
    const first = firsts.get(service);
    if (first === undefined) firsts.set(service, item);
    else seconds.push({ item, first, service });
  }
  return seconds;
}
