/**
 * What every inbound request passes before the service sees it, on the raw listener and
 * on the loopback server behind a WebSocket tunnel alike: its end-user token, when the
 * service has a RequestAuthentication (authenticateInbound, asynchronous the first time a
 * token is seen); then its target in normal form (the form forwarded, so the form rules
 * match), the service's authorization policies, and its rate limits (admitInbound).
 */
import { normalTarget, PathRefusal } from "../core/normal-path.ts";
import { ANONYMOUS, Unauthenticated, type Authenticated, type AuthenticationOutcome, type RequestAuthenticator } from "./authentication/authenticator.ts";
import type { Authorizer, EndUser } from "./authorization.ts";
import type { HeadersSeen } from "./authorization-conditions.ts";
import { inCgiList } from "../core/cgi-name.ts";
import { errorParts, type ErrorParts } from "./errors.ts";
import type { ProxyMetrics } from "./metrics.ts";
import { peerService } from "./peer-service.ts";
import type { RateLimiter } from "./rate-limit.ts";
import type { UpstreamHttp } from "./upstream-protocol.ts";

/** The policies of the sidecar's own service in force: built per config version. */
export interface InboundPolicies {
  /**
   * Set while the policies are not known (a sidecar following a control plane before its
   * first config is applied): every request is refused with 503 and this reason, rather
   * than let in with no policy in force.
   */
  pending?: string;
  /** Undefined: tokens are not looked at. */
  authenticator?: RequestAuthenticator;
  /** Undefined: every caller is let in. */
  authorizer?: Authorizer;
  /** With the dry-run policies enforced too: what it would refuse is counted, not refused. */
  dryRun?: Authorizer;
  /** Undefined: no limit. */
  limiter?: RateLimiter;
  /** The HTTP the service speaks by its Service's word (upstream-protocol.ts); undefined: each call's own. */
  upstreamHttp?: UpstreamHttp;
  /** `%2F` and `%5C` in paths kept as data (the service reads them so) instead of refused (--escaped-slashes keep). */
  keepEscapedSlashes?: boolean;
}

/**
 * The request's end user (none without a token, and ANONYMOUS without an authenticator),
 * the 401 that refuses it (counted here), or a promise of either for a token not seen
 * before.
 */
export function authenticateInbound(
  metrics: ProxyMetrics,
  policies: InboundPolicies,
  caller: string,
  fields: readonly string[],
  dropped: readonly string[],
): Authenticated | ErrorParts | Promise<Authenticated | ErrorParts> {
  if (policies.authenticator === undefined) return ANONYMOUS;
  const outcome = policies.authenticator.authenticate(fields, dropped);
  return outcome instanceof Promise ? answerWhenVerified(metrics, caller, outcome) : answerTo(metrics, caller, outcome);
}

/** Its own function: a closure in authenticateInbound would have the engine allocate a scope on every request. */
function answerWhenVerified(metrics: ProxyMetrics, caller: string, verifying: Promise<AuthenticationOutcome>): Promise<Authenticated | ErrorParts> {
  return verifying.then((o) => answerTo(metrics, caller, o));
}

function answerTo(metrics: ProxyMetrics, caller: string, outcome: AuthenticationOutcome): Authenticated | ErrorParts {
  if (!(outcome instanceof Unauthenticated)) return outcome;
  metrics.unauthenticated.inc({ peer: peerService(caller), reason: outcome.reason });
  return errorParts("unauthenticated", outcome.detail, { "www-authenticate": 'Bearer error="invalid_token"' });
}

/**
 * The headers rules read when a token changes them: those the service will receive.
 * `fields` as parsed, with `dropped` the names the client listed in Connection (which the
 * proxy removes). The client's fields the proxy leaves off (its copies of claim headers,
 * the token's header, those listed in Connection) are taken out here and the claim
 * headers the proxy adds put in, which Connection cannot remove. Undefined when the
 * token changes nothing: the rules read `fields` less `dropped`, with nothing allocated.
 */
export function headersSeen(fields: readonly string[], dropped: readonly string[], authn: Authenticated): HeadersSeen | undefined {
  const strip = authn.strip;
  if (strip === undefined) return undefined;
  const seen: string[] = [];
  for (let i = 0; i < fields.length; i += 2) {
    const name = fields[i]!;
    if (!inCgiList(strip.names, name) && !(dropped.length > 0 && inCgiList(dropped, name))) seen.push(name, fields[i + 1]!);
  }
  for (const [name, value] of authn.claimHeaders) seen.push(name, value);
  return { fields: seen, dropped: NOTHING_DROPPED };
}

const NOTHING_DROPPED: readonly string[] = [];

/** An answer that refuses the request, as opposed to the request's end user. */
export const isRefusal = (a: Authenticated | ErrorParts): a is ErrorParts => "status" in a;

/**
 * The target to forward, or the answer that refuses the request (counted here); arguments
 * as Authorizer.check takes them, `user` from authenticateInbound.
 */
export function admitInbound(
  metrics: ProxyMetrics,
  policies: InboundPolicies,
  caller: string,
  method: string,
  sentTarget: string,
  fields: readonly string[],
  dropped: readonly string[],
  user?: EndUser,
): string | ErrorParts {
  if (policies.pending !== undefined) return errorParts("not-ready", policies.pending);
  const target = normalTarget(sentTarget, policies.keepEscapedSlashes);
  if (target instanceof PathRefusal) {
    metrics.refused.inc({ direction: "inbound", reason: "path" });
    return errorParts("bad-request", target.detail);
  }
  const denial = policies.authorizer?.check(caller, method, target, fields, dropped, user);
  if (denial !== undefined) {
    metrics.denied.inc({ peer: peerService(caller), policy: denial.policy });
    return errorParts("forbidden", denial.detail);
  }
  const would = policies.dryRun?.check(caller, method, target, fields, dropped, user);
  if (would !== undefined) metrics.dryRunDenied.inc({ peer: peerService(caller), policy: would.policy });
  const limited = policies.limiter?.admit(caller);
  if (limited === undefined) return target;
  metrics.rateLimited.inc({ peer: peerService(caller), limit: limited.limit });
  return errorParts("rate-limited", `over the ${limited.limit === "total" ? "service's" : "caller's"} rate limit`, { "retry-after": String(limited.retryAfterS) });
}
