/**
 * The AuthorizationPolicies of this sidecar's own service, compiled once per config and
 * checked on every inbound request (WebSocket upgrades included) against what the
 * service will receive: the caller's proven SPIFFE ID, the workload's port, the method,
 * the path in normal form (core/normal-path.ts) and the headers that are forwarded (none
 * the client listed in Connection, since the proxy drops those), and the end user a
 * RequestAuthentication verified; and on every opaque TCP connection, against its caller
 * and port. Istio's order: a deny policy's match refuses; with no allow policy the
 * request is let in; otherwise an allow policy must match.
 */
import type { AuthorizationPolicy } from "../config/kinds/authorization-policy.ts";
import { pathOf } from "../core/normal-path.ts";
import { callerMatches, callerMatchesNone, compileCallers, type CallerMatch } from "./caller-match.ts";
import { claimHolds, headerHolds, type ValueLists } from "./authorization-conditions.ts";

/** What a rule sees of a request. */
interface RequestSeen {
  /** The caller's SPIFFE ID, from its certificate. */
  caller: string;
  /** The workload's port it goes to. */
  port: number;
  /** The end user of the token a RequestAuthentication verified; undefined without one. */
  user: EndUser | undefined;
  method: string;
  /** The path in normal form, without the query; "" when no rule reads it. */
  path: string;
  /** [name0, value0, ...], names lower-cased, as parsed. */
  fields: readonly string[];
  /** Header names the client listed in Connection: dropped before forwarding, so not seen. */
  dropped: readonly string[];
}

const NONE: readonly string[] = [];
const LOWER = /[a-z]/;

/** A refused request: the policy that decided, for metrics and logs. */
export interface Denial {
  /** `namespace/name` of the deny policy that matched, or NO_ALLOW_MATCHED. */
  policy: string;
  detail: string;
}

export const NO_ALLOW_MATCHED = "no-allow-matched";

/** The sidecar whose inbound enforces the policies. */
export interface PolicySubject {
  namespace: string;
  service: string;
  trustDomain: string;
}

/** The sidecar, and the workload's port its HTTP requests go to (its --upstream's). */
export interface AuthorizationSubject extends PolicySubject {
  httpPort: number;
}

/** An end user: the principal and claims of the token a RequestAuthentication verified. */
export interface EndUser {
  /** `iss/sub`. */
  principal: string;
  claims: Readonly<Record<string, unknown>>;
}

type CompiledCondition = ValueLists & ({ header: string } | { claim: readonly string[] });

/** A path or principal pattern: exact, prefix (`text*`), suffix (`*text`) or any (`*`). */
type TextPattern = { kind: "exact" | "prefix" | "suffix"; text: string } | { kind: "any" };

interface CompiledRule {
  from?: CallerMatch;
  notFrom?: CallerMatch;
  principals?: readonly TextPattern[];
  notPrincipals?: readonly TextPattern[];
  methods?: ReadonlySet<string>;
  notMethods?: ReadonlySet<string>;
  paths?: readonly TextPattern[];
  notPaths?: readonly TextPattern[];
  ports?: ReadonlySet<number>;
  notPorts?: ReadonlySet<number>;
  when?: readonly CompiledCondition[];
}

interface CompiledPolicy {
  id: string;
  rules: CompiledRule[];
}

export class Authorizer {
  /** Some rule reads the path: it is cut from the target once per request, not per rule. */
  private readonly readsPaths: boolean;
  /** The request being checked: one object for every check, which runs to its end at once. */
  private readonly seen: RequestSeen = { caller: "", port: 0, user: undefined, method: "", path: "", fields: NONE, dropped: NONE };

  constructor(
    private readonly deny: readonly CompiledPolicy[],
    private readonly allow: readonly CompiledPolicy[],
    /** The policies it was built from, for /config_dump. */
    readonly sources: readonly AuthorizationPolicy[],
    /** Where every HTTP request goes: the port of the sidecar's --upstream. */
    private readonly httpPort: number,
  ) {
    this.readsPaths = [...deny, ...allow].some((p) => p.rules.some((r) => r.paths !== undefined || r.notPaths !== undefined));
  }

  /**
   * Undefined when the request may pass; otherwise why not. `target`: as forwarded (path in
   * normal form); `fields`: [name0, value0, ...] as parsed; `dropped`: names the client
   * listed in Connection, removed before the service; `user`: the verified end user.
   */
  check(caller: string, method: string, target: string, fields: readonly string[], dropped: readonly string[], user?: EndUser): Denial | undefined {
    const req = this.seen;
    req.caller = caller;
    req.port = this.httpPort;
    req.user = user;
    // Matched in upper case: services that upper-case a method (Werkzeug, for one) read "delete" as DELETE.
    req.method = LOWER.test(method) ? method.toUpperCase() : method;
    req.path = this.readsPaths ? pathOf(target) : "";
    req.fields = fields;
    req.dropped = dropped;
    try {
      for (const p of this.deny) if (anyRuleMatches(p, req, "deny")) return { policy: p.id, detail: "denied by an authorization policy" };
      if (this.allow.length === 0) return undefined;
      for (const p of this.allow) if (anyRuleMatches(p, req, "allow")) return undefined;
      return { policy: NO_ALLOW_MATCHED, detail: "no authorization policy allows this request" };
    } finally {
      req.fields = req.dropped = NONE; // holds no request's fields or user between checks
      req.user = undefined;
    }
  }

  /**
   * Whether `caller` may open an opaque TCP connection to the workload's `port`, where no
   * method, path, header or token is seen. Istio's rule: a rule that names any of them
   * matches no connection in an allow policy, and is read without them in a deny policy,
   * so a policy written to refuse requests never lets a connection through for want of HTTP.
   */
  checkConnection(caller: string, port: number): Denial | undefined {
    for (const p of this.deny) if (p.rules.some((r) => connectionMatches(r, caller, port, "deny"))) return { policy: p.id, detail: "denied by an authorization policy" };
    if (this.allow.length === 0) return undefined;
    for (const p of this.allow) if (p.rules.some((r) => connectionMatches(r, caller, port, "allow"))) return undefined;
    return { policy: NO_ALLOW_MATCHED, detail: "no authorization policy allows this connection" };
  }
}

/** A rule against a connection: its caller and port fields only (see checkConnection). */
function connectionMatches(rule: CompiledRule, caller: string, port: number, action: "allow" | "deny"): boolean {
  if (rule.from && !callerMatches(rule.from, caller)) return false;
  if (rule.notFrom && !callerMatchesNone(rule.notFrom, caller, action === "deny")) return false;
  if (!portMatches(rule, port)) return false;
  return action === "deny" || !readsRequest(rule);
}

function portMatches(rule: CompiledRule, port: number): boolean {
  return (rule.ports === undefined || rule.ports.has(port)) && (rule.notPorts === undefined || !rule.notPorts.has(port));
}

/** A rule naming anything only a request has. */
function readsRequest(rule: CompiledRule): boolean {
  return (
    rule.principals !== undefined ||
    rule.notPrincipals !== undefined ||
    rule.methods !== undefined ||
    rule.notMethods !== undefined ||
    rule.paths !== undefined ||
    rule.notPaths !== undefined ||
    rule.when !== undefined
  );
}

/** The authorizer of `subject`'s inbound, or undefined when no enforced policy applies to it (every caller is let in). */
export function authorizerFor(policies: readonly AuthorizationPolicy[], subject: AuthorizationSubject): Authorizer | undefined {
  return compile(ownPolicies(policies, subject).filter((p) => p.spec.mode === "enforce"), subject);
}

/**
 * What the inbound would decide if its dry-run policies were enforced too, to count what
 * they would refuse; undefined when it has none.
 */
export function dryRunAuthorizerFor(policies: readonly AuthorizationPolicy[], subject: AuthorizationSubject): Authorizer | undefined {
  const own = ownPolicies(policies, subject);
  return own.some((p) => p.spec.mode === "dry-run") ? compile(own, subject) : undefined;
}

function ownPolicies(policies: readonly AuthorizationPolicy[], subject: PolicySubject): AuthorizationPolicy[] {
  return policies.filter((p) => appliesTo(p, subject));
}

/** Whether a policy is for the subject's service: named by it, or "*" in its namespace. */
export function appliesTo(policy: { metadata: { namespace: string }; spec: { service: string } }, subject: PolicySubject): boolean {
  return policy.metadata.namespace === subject.namespace && (policy.spec.service === subject.service || policy.spec.service === "*");
}

function compile(own: AuthorizationPolicy[], subject: AuthorizationSubject): Authorizer | undefined {
  if (own.length === 0) return undefined;
  const compiled = (action: "allow" | "deny") =>
    own.filter((p) => p.spec.action === action).map((p) => ({ id: `${p.metadata.namespace}/${p.metadata.name}`, rules: p.spec.rules.map((r) => compileRule(r, p.metadata.namespace, subject.trustDomain)) }));
  return new Authorizer(compiled("deny"), compiled("allow"), own, subject.httpPort);
}

function compileRule(rule: AuthorizationPolicy["spec"]["rules"][number], namespace: string, trustDomain: string): CompiledRule {
  const { from, to, when } = rule;
  const not = from && { services: from.notServices, namespaces: from.notNamespaces, identities: from.notIdentities };
  const set = <T,>(list: readonly T[] | undefined) => list && new Set(list);
  return {
    from: from && compileCallers(from, namespace, trustDomain),
    notFrom: not && (not.services || not.namespaces || not.identities) ? compileCallers(not, namespace, trustDomain) : undefined,
    principals: from?.requestPrincipals?.map(patternOf),
    notPrincipals: from?.notRequestPrincipals?.map(patternOf),
    methods: set(to?.methods),
    notMethods: set(to?.notMethods),
    paths: to?.paths?.map(patternOf),
    notPaths: to?.notPaths?.map(patternOf),
    ports: set(to?.ports),
    notPorts: set(to?.notPorts),
    when: when?.map((c) => {
      const lists = { values: set(c.values), notValues: set(c.notValues) };
      return c.header !== undefined ? { header: c.header, ...lists } : { claim: c.claim!.split("."), ...lists };
    }),
  };
}

function patternOf(pattern: string): TextPattern {
  if (pattern === "*") return { kind: "any" };
  if (pattern.startsWith("*")) return { kind: "suffix", text: pattern.slice(1) };
  if (pattern.endsWith("*")) return { kind: "prefix", text: pattern.slice(0, -1) };
  return { kind: "exact", text: pattern };
}

function anyRuleMatches(p: CompiledPolicy, req: RequestSeen, action: "allow" | "deny"): boolean {
  for (const rule of p.rules) if (matches(rule, req, action)) return true;
  return false;
}

function matches(rule: CompiledRule, req: RequestSeen, action: "allow" | "deny"): boolean {
  if (rule.from && !callerMatches(rule.from, req.caller)) return false;
  // A caller whose namespace cannot be read is read the way that refuses.
  if (rule.notFrom && !callerMatchesNone(rule.notFrom, req.caller, action === "deny")) return false;
  if (rule.principals && (req.user === undefined || !anyPatternMatches(rule.principals, req.user.principal))) return false;
  if (rule.notPrincipals && req.user !== undefined && anyPatternMatches(rule.notPrincipals, req.user.principal)) return false;
  if (rule.methods && !rule.methods.has(req.method)) return false;
  if (rule.notMethods?.has(req.method)) return false;
  if (rule.paths && !anyPatternMatches(rule.paths, req.path)) return false;
  if (rule.notPaths && anyPatternMatches(rule.notPaths, req.path)) return false;
  if (!portMatches(rule, req.port)) return false;
  if (rule.when) for (const c of rule.when) if (!("header" in c ? headerHolds(req, c.header, c, action) : claimHolds(req.user?.claims, c.claim, c))) return false;
  return true;
}

function anyPatternMatches(patterns: readonly TextPattern[], text: string): boolean {
  for (const m of patterns) if (patternMatches(m, text)) return true;
  return false;
}

function patternMatches(m: TextPattern, text: string): boolean {
  switch (m.kind) {
    case "any":
      return true;
    case "exact":
      return text === m.text;
    case "prefix":
      return text.startsWith(m.text);
    case "suffix":
      return text.endsWith(m.text);
  }
}
