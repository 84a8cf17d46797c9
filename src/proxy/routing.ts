/**
 * HTTPRoutes on the outbound: once a call's host names a destination, the first rule of
 * its route that matches the request picks a backend by weight, and the call goes there
 * instead (balancing, retries and the breaker are the backend's), with the rule's header
 * changes. Routes are compiled against each snapshot, so a backend is a Destination, found
 * without a lookup per call, and each choice is made once, not per call.
 * Routing only chooses where a call goes; what the callee admits is its inbound's
 * business, so paths are matched as sent.
 */
import type { HTTPRoute } from "../config/kinds/http-route.ts";
import { pathOf } from "../core/normal-path.ts";
import type { Destination, Snapshot } from "./destinations.ts";
import { compileHeaderChange, type RequestHeaderChange } from "./request-header-change.ts";
import { compileFault, type CompiledFault } from "./fault.ts";

/** Where a call goes, how its route changes its headers, its timeout if the route sets one, and the faults injected into it. */
export interface RouteChoice {
  dest: Destination;
  requestHeaders: RequestHeaderChange | undefined;
  /** From sending until the response head, retries included, instead of the destination's; 0: none. */
  timeoutMs: number | undefined;
  /** One try's, instead of the destination's timeouts.perTry. */
  perTryMs: number | undefined;
  fault: CompiledFault | undefined;
}

interface CompiledMatch {
  method?: string;
  path?: { exact: string } | { prefix: string };
  headers?: readonly { name: string; value: string }[];
}

interface CompiledRule {
  matches: readonly CompiledMatch[] | undefined;
  backends: readonly { choice: RouteChoice; weight: number }[];
  totalWeight: number;
}

export interface CompiledRoute {
  /** namespace/name, for /config_dump. */
  id: string;
  rules: readonly CompiledRule[];
  /** A call no rule takes: to the routed service, unchanged. */
  unrouted: RouteChoice;
}

/** What a route reads of a call. */
export interface RoutedRequest {
  method: string;
  pathAndQuery: string;
  header(name: string): string | undefined;
}

/** The routes of `routes` whose service and backends are all in `snapshot`, by the destination they route. */
export function compileRoutes(routes: readonly HTTPRoute[], snapshot: Snapshot): Map<Destination, CompiledRoute> {
  const compiled = new Map<Destination, CompiledRoute>();
  for (const route of routes) {
    const ns = route.metadata.namespace;
    const dest = (name: string) => snapshot.destinations.get(`${name}.${ns}`);
    const routed = dest(route.spec.service);
    const id = `${ns}/${route.metadata.name}`;
    const rules = route.spec.rules.map((r) => {
      const requestHeaders = r.requestHeaders && compileHeaderChange(r.requestHeaders);
      const fault = r.fault && compileFault(r.fault, id);
      return {
        matches: r.matches?.map((m) => ({
          method: m.method,
          path: m.path && (m.path.exact !== undefined ? { exact: m.path.exact } : { prefix: m.path.prefix!.replace(/\/+$/, "") }),
          headers: m.headers,
        })),
        backends: r.backends.filter((b) => b.weight > 0).map((b) => ({ choice: { dest: dest(b.service)!, requestHeaders, timeoutMs: r.timeouts?.request, perTryMs: r.timeouts?.backendRequest, fault }, weight: b.weight })),
      };
    });
    // Config validation sees to it that every Service named exists; a route that names one missing is left out, not half applied.
    if (routed === undefined || rules.some((r) => r.backends.some((b) => b.choice.dest === undefined))) continue;
    compiled.set(routed, {
      id,
      rules: rules.map((r) => ({ ...r, totalWeight: r.backends.reduce((t, b) => t + b.weight, 0) })),
      unrouted: { dest: routed, requestHeaders: undefined, timeoutMs: undefined, perTryMs: undefined, fault: undefined },
    });
  }
  return compiled;
}

/** Where a call to the service `route` routes goes: the first matching rule's choice, or the service itself. */
export function routedDestination(route: CompiledRoute, req: RoutedRequest, random: () => number = Math.random): RouteChoice {
  for (const rule of route.rules) {
    if (rule.matches !== undefined && !rule.matches.some((m) => matches(m, req))) continue;
    let at = random() * rule.totalWeight;
    for (const b of rule.backends) {
      at -= b.weight;
      if (at < 0) return b.choice;
    }
    return rule.backends.at(-1)!.choice;
  }
  return route.unrouted;
}

function matches(m: CompiledMatch, req: RoutedRequest): boolean {
  if (m.method !== undefined && m.method !== req.method) return false;
  if (m.path !== undefined) {
    const path = pathOf(req.pathAndQuery);
    if ("exact" in m.path ? path !== m.path.exact : !underPrefix(path, m.path.prefix)) return false;
  }
  if (m.headers !== undefined) for (const h of m.headers) if (req.header(h.name) !== h.value) return false;
  return true;
}

/** Whole segments: "/v2" takes /v2 and /v2/x, not /v2x; "" (from "/") takes every path. */
function underPrefix(path: string, prefix: string): boolean {
  return prefix === "" || path === prefix || (path.startsWith(prefix) && path.charCodeAt(prefix.length) === 47);
}
