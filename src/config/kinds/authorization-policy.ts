/**
 * AuthorizationPolicy: which callers may send which requests to a service, enforced by
 * the service's own sidecars on their inbound (Istio's AuthorizationPolicy, Consul's L7
 * intentions). Without any policy every caller with a mesh certificate is let in; once
 * an allow policy names a service, only requests one of its rules matches are.
 */
import { z } from "zod";
import { cgiName } from "../../core/cgi-name";
import { HOP_BY_HOP_HEADERS, IDENTITY_HEADERS } from "../../core/header-names";
import { isNormalPath } from "../../core/normal-path";
import { nameProblem, parseSpiffeId } from "../../pki/spiffe";
import { always, dnsLabel, policyService, Port } from "../common";
import { registerKind, type ManifestOf } from "../manifest";

export const ACTIONS = ["allow", "deny"] as const;

/** Headers a rule cannot see: the proxy removes or sets them itself before the service does. */
export const UNMATCHABLE_HEADERS: ReadonlySet<string> = new Set([...HOP_BY_HOP_HEADERS, ...IDENTITY_HEADERS, "host", "content-length"]);
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/** `name` (the policy's namespace) or `name.namespace`: a caller's service identity. */
const CallerService = z.string().superRefine((value, ctx) => {
  const parts = value.split(".");
  const problem = parts.length > 2 ? `"${value}": expected name or name.namespace` : parts.map((p) => nameProblem("caller", p)).find((p) => p);
  if (problem) ctx.addIssue({ code: "custom", message: problem });
});

const SpiffeIdText = z.string().superRefine((value, ctx) => {
  const parsed = parseSpiffeId(value);
  if (!parsed.ok) ctx.addIssue({ code: "custom", message: parsed.reason });
});

/** What a path in normal form can hold (RFC 3986 pchar and "/", less ";", which the inbound refuses). */
const PATH_CHARS = /^[A-Za-z0-9\-._~!$&'()*+,=:@/%]*$/;

/** A path rule: exact, `prefix*`, `*suffix` or `*`, over normalized paths. */
const PathPattern = z.string().superRefine((value, ctx) => {
  const problem = pathPatternProblem(value);
  if (problem) ctx.addIssue({ code: "custom", message: `"${value}": ${problem}` });
});

function pathPatternProblem(value: string): string | undefined {
  if (value === "*") return undefined;
  const suffix = value.startsWith("*");
  const prefix = !suffix && value.endsWith("*");
  const bare = suffix ? value.slice(1) : prefix ? value.slice(0, -1) : value;
  if (bare.includes("*")) return '"*" may stand only at the start or the end';
  if (bare.includes("?")) return "paths are matched without the query";
  if (!PATH_CHARS.test(bare)) return "holds a character no request path can (spaces, quotes, non-ASCII, ';'): write others percent-encoded, e.g. %C3%A9 for é";
  if (!suffix && !bare.startsWith("/")) return 'a path starts with "/" ("*" first for a suffix)';
  // A suffix must be able to end a normal path, a prefix to start one.
  const probe = suffix ? `/x${bare.startsWith("/") ? "" : "/"}${bare}` : prefix ? `${bare}x` : bare;
  if (!isNormalPath(probe))
    return 'not in normal form (no "//", "." or ".." segments; escapes of letters and digits decoded, others in upper case), so no request could match it';
  return undefined;
}

export const Source = z
  .strictObject({
    services: z.array(CallerService).min(1).optional().describe("Callers by the service identity in their certificate (a Service's `identity`, default its name): `name` in the policy's namespace, or `name.namespace`."),
    namespaces: z.array(dnsLabel("namespace")).min(1).optional().describe("Callers from these namespaces."),
    identities: z.array(SpiffeIdText).min(1).optional().describe("Callers by full SPIFFE ID."),
  })
  .describe("Who sends the request; each field given must match (entries within a field: any one).");
export type Source = z.output<typeof Source>;

/** `iss/sub` of a verified end-user token: exact, `prefix*`, `*suffix` or `*`. */
const PrincipalPattern = z.string().min(1).refine((value) => value === "*" || !value.slice(1, -1).includes("*"), '"*" may stand only at the start or the end');

const RuleSource = Source.extend({
  requestPrincipals: z
    .array(PrincipalPattern)
    .min(1)
    .optional()
    .describe('End users, as `issuer/subject` of the token a RequestAuthentication verified: exact, a prefix ("https://id.example.com/*"), a suffix, or "*" for any verified token. A request without a token matches none.'),
  notServices: z.array(CallerService).min(1).optional().describe("Callers other than these services."),
  notNamespaces: z.array(dnsLabel("namespace")).min(1).optional().describe("Callers from other namespaces. A caller whose SPIFFE ID names no namespace is read the way that refuses: it does not match in an allow rule, and does in a deny rule."),
  notIdentities: z.array(SpiffeIdText).min(1).optional().describe("Callers other than these SPIFFE IDs."),
  notRequestPrincipals: z
    .array(PrincipalPattern)
    .min(1)
    .optional()
    .describe('End users other than these; a request without a token matches. A deny rule with ["*"] refuses every request without a valid token.'),
}).describe("Who sends the request; each field given must match (entries within a field: any one; a not- field: none).");

export const Operation = z
  .strictObject({
    methods: z
      .array(z.string().regex(TOKEN, "expected an HTTP method").transform((m) => m.toUpperCase()))
      .min(1)
      .optional()
      .describe("Request methods, e.g. GET, POST."),
    paths: z
      .array(PathPattern)
      .min(1)
      .optional()
      .describe('Paths after normalization, without the query: exact ("/v1/charges"), a prefix ("/v1/charges/*"), a suffix ("*.json") or "*".'),
    notMethods: z
      .array(z.string().regex(TOKEN, "expected an HTTP method").transform((m) => m.toUpperCase()))
      .min(1)
      .optional()
      .describe("Methods other than these."),
    notPaths: z.array(PathPattern).min(1).optional().describe("Paths other than these, written as in paths."),
    ports: z
      .array(Port)
      .min(1)
      .optional()
      .describe("The workload's ports the request or connection goes to, as Istio's: a tcp port's targetPort; for HTTP, the port of the sidecar's --upstream. A connection-level field: it applies to opaque TCP connections too."),
    notPorts: z.array(Port).min(1).optional().describe("Ports other than these, written as in ports."),
  })
  .describe("What the request does; each field given must match (entries within a field: any one; a not- field: none).");

/** A claim name, or a path into nested claims with dots (Keycloak's `realm_access.roles`). */
export const ClaimPath = z.string().regex(/^[^.\s]+(\.[^.\s]+)*$/, 'expected a claim name, or names joined by "." for a nested claim');

const ConditionValues = z
  .array(z.string().refine((v) => !v.includes(",") && v.trim() === v && v.length > 0, "expected a single value: no comma, no surrounding space"))
  .min(1);

export const Condition = z
  .strictObject({
    header: z
      .string()
      .regex(TOKEN, "expected an HTTP header name")
      .transform((h) => cgiName(h.toLowerCase()))
      .superRefine((h, ctx) => {
        if (UNMATCHABLE_HEADERS.has(h)) ctx.addIssue({ code: "custom", message: `"${h}" is removed or set by the proxy before the service sees it; a rule cannot use it` });
      })
      .optional()
      .describe('Request header name; "_" and other separators are read as "-" (CGI-style servers read them all as one variable).'),
    claim: ClaimPath.optional()
      .describe('A claim of the end-user token a RequestAuthentication verified: a name, or a path like realm_access.roles. A request without a token matches none.'),
    values: ConditionValues.optional().describe("Values the header or claim may hold."),
    notValues: ConditionValues.optional().describe("Values it must not hold; a header or claim that is absent holds none of them."),
  })
  .superRefine((c, ctx) => {
    if ((c.header === undefined) === (c.claim === undefined)) ctx.addIssue({ code: "custom", path: ["header"], message: "give header or claim, one of the two" });
    if (c.values === undefined && c.notValues === undefined) ctx.addIssue({ code: "custom", path: ["values"], message: "give values, notValues or both" });
    // A header is compared as the bytes it arrived in: a value with other characters could never be matched.
    if (c.header !== undefined)
      for (const list of ["values", "notValues"] as const)
        (Array.isArray(c[list]) ? c[list] : []).forEach((v, i) => {
          if (typeof v === "string" && !/^[\x20-\x7e]+$/.test(v)) ctx.addIssue({ code: "custom", path: [list, i], message: `"${v}": a header value is matched as its bytes; write printable ASCII only` });
        });
  }, always)
  .describe(
    "A header's values: all of its comma-separated elements, over every line it appears on, read the way that refuses: an allow rule needs every element in values (and at least one) and none in notValues; a deny rule takes any one element in values, or any one not in notValues (or none at all). A claim's values: the claim's string, each string of a list, or each space-separated scope of the `scope` claim; values holds when one of them is listed, notValues when none is.",
  );

export const AuthorizationRule = z
  .strictObject({
    from: RuleSource.optional().describe("Who may send it; omitted: any caller with a mesh certificate."),
    to: Operation.optional().describe("What it may do; omitted: anything."),
    when: z.array(Condition).min(1).optional().describe("Header and token-claim conditions, all of which must hold."),
  })
  .describe("Matches a request when every part given matches; {} matches every request.");

export const AuthorizationPolicySpec = z
  .strictObject({
    service: policyService("enforce the policy"),
    action: z.enum(ACTIONS).default("allow").describe("allow: requests a rule matches are let in, others refused unless another allow policy matches; deny: requests a rule matches are refused, before any allow. Default allow."),
    mode: z
      .enum(["enforce", "dry-run"])
      .default("enforce")
      .describe(
        "enforce, or dry-run: the policy is evaluated as if enforced and what it would refuse is counted in mesh_authorization_dry_run_denied_total, but nothing is refused on its account. Default enforce.",
      ),
    rules: z
      .array(AuthorizationRule)
      .describe("The requests the policy is about: any one rule matching is enough. An allow policy with no rules allows nothing (a default deny); a deny policy with rules: [{}] denies everything."),
  })
  .superRefine((spec, ctx) => {
    if (spec.action === "deny" && Array.isArray(spec.rules) && spec.rules.length === 0)
      ctx.addIssue({ code: "custom", path: ["rules"], message: "a deny policy without rules denies nothing; give rules, or [{}] to deny everything" });
  }, always)
  .describe("Who may call a service, with what: allow and deny rules over callers, methods, paths and headers.");

export const AuthorizationPolicy = registerKind({
  kind: "AuthorizationPolicy",
  spec: AuthorizationPolicySpec,
  description: "Which callers may send which requests to a service, enforced by the service's sidecars: allow and deny rules over caller identities, methods, paths and headers.",
});
export type AuthorizationPolicy = ManifestOf<typeof AuthorizationPolicy>;
