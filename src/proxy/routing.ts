/**
 * HTTPRoutes on the outbound: once a call's host names a destination, the first rule of
 * its route that matches the request picks a backend by weight, and the call goes there
 * instead (balancing, retries and the breaker are the backend's), with the rule's header
 * changes. Routes are compiled against each snapshot, so a backend is a Destination, found
 * without a lookup per call, and each choice is made once, not per call.
 * Routing only chooses where a call goes; what the callee admits is its inbound's
 * business, so paths are matched as sent.
 */
import { routeServices, type HTTPRoute, type HTTPRouteRule } from "../config/kinds/http-route.ts";
import { pathOf } from "../core/normal-path.ts";
import type { Destination, Snapshot } from "./destinations.ts";
import { compileHeaderChange, type RequestHeaderChange } from "./request-header-change.ts";
import { compileFault, type CompiledFault } from "./fault.ts";
import { compileHeaderEdits, type HeaderEdits } from "./header-edits.ts";
import { callSettings, type CallSettings } from "./policy.ts";
import { compileMirror, type CompiledMirror } from "./mirror.ts";

/** Where a call goes, how its route changes its headers and its response's, its timeouts and retries, and the faults injected into it. */
export interface RouteChoice {
  dest: Destination;
  requestHeaders: RequestHeaderChange | undefined;
  responseHeaders: HeaderEdits | undefined;
  /** The destination's own, or with what the rule sets in their place. */
  call: CallSettings;
  fault: CompiledFault | undefined;
  /** Where copies of the call go (mirror.ts). */
  mirror: CompiledMirror | undefined;
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
    // Config validation sees to it that every Service named exists; a route that names one missing is left out, not half applied.
    if (routed === undefined || routeServices(route).some(({ service }) => dest(service) === undefined)) continue;
    const id = `${ns}/${route.metadata.name}`;
    compiled.set(routed, {
      id,
      rules: route.spec.rules.map((r) => compileRule(r, id, (name) => dest(name)!)),
      unrouted: { dest: routed, requestHeaders: undefined, responseHeaders: undefined, call: routed.call, fault: undefined, mirror: undefined },
    });
  }
  return compiled;
}

function compileRule(rule: HTTPRouteRule, routeId: string, dest: (service: string) => Destination): CompiledRule {
  const requestHeaders = rule.requestHeaders && compileHeaderChange(rule.requestHeaders);
  const responseHeaders = rule.responseHeaders && compileHeaderEdits(rule.responseHeaders);
  const fault = rule.fault && compileFault(rule.fault, routeId);
  const mirror = rule.mirror && compileMirror(dest(rule.mirror.service), rule.mirror.percent);
  const ownCall = rule.timeouts !== undefined || rule.retries !== undefined;
  const backends = rule.backends
    .filter((b) => b.weight > 0)
    .map((b) => {
      const to = dest(b.service);
      // The rule's timeouts and retries over each backend's own policy.
      return { choice: { dest: to, requestHeaders, responseHeaders, call: ownCall ? callSettings(to.policy, rule) : to.call, fault, mirror }, weight: b.weight };
    });
  return {
    matches: rule.matches?.map((m) => ({
      method: m.method,
      path: m.path && (m.path.exact !== undefined ? { exact: m.path.exact } : { prefix: m.path.prefix!.replace(/\/+$/, "") }),
      headers: m.headers,
    })),
    backends,
    totalWeight: backends.reduce((t, b) => t + b.weight, 0),
  };
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
