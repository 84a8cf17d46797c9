/**
 * The callers a policy's `from` names (AuthorizationPolicy rules, RateLimitPolicy
 * overrides), compiled once per config: by service identity, namespace or SPIFFE ID,
 * every field given matching the caller's proven SPIFFE ID.
 */
import type { Source } from "../config/kinds/authorization-policy.ts";
import { callerWorkload } from "./peer-service.ts";

export interface CallerMatch {
  services?: ReadonlySet<string>;
  identities?: ReadonlySet<string>;
  namespaces?: ReadonlySet<string>;
}

/** `from` of a policy in `namespace`: a bare service name means that namespace. */
export function compileCallers(from: Source, namespace: string, trustDomain: string): CallerMatch {
  return {
    services: from.services && new Set(from.services.map((s) => callerId(s, namespace, trustDomain))),
    identities: from.identities && new Set(from.identities),
    namespaces: from.namespaces && new Set(from.namespaces),
  };
}

export function callerMatches(m: CallerMatch, caller: string): boolean {
  if (m.services && !m.services.has(caller)) return false;
  if (m.identities && !m.identities.has(caller)) return false;
  if (m.namespaces) {
    const ns = callerWorkload(caller)?.namespace;
    if (ns === undefined || !m.namespaces.has(ns)) return false;
  }
  return true;
}

/**
 * Whether the caller is none of those `m` names: every field given must exclude it. A
 * caller whose SPIFFE ID names no namespace counts as outside `m.namespaces` only when
 * `unknownNamespaceOutside`: the reading that refuses, which is so in a deny rule.
 */
export function callerMatchesNone(m: CallerMatch, caller: string, unknownNamespaceOutside: boolean): boolean {
  if (m.services?.has(caller)) return false;
  if (m.identities?.has(caller)) return false;
  if (m.namespaces) {
    const ns = callerWorkload(caller)?.namespace;
    if (ns === undefined ? !unknownNamespaceOutside : m.namespaces.has(ns)) return false;
  }
  return true;
}

/** `name` or `name.namespace` as the SPIFFE ID its certificate carries. */
function callerId(service: string, namespace: string, trustDomain: string): string {
  const [name, ns = namespace] = service.split(".");
  return `spiffe://${trustDomain}/ns/${ns}/sa/${name}`;
}
