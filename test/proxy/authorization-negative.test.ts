/**
 * AuthorizationPolicy's not- fields (Istio's notPrincipals, notNamespaces, notMethods,
 * notPaths, notRequestPrincipals, notValues): each excludes what it lists, combines with
 * the other fields of its rule, and where a client chooses how a request reads (a
 * header's elements, a caller with no namespace) it reads the way that refuses.
 */
import { describe, expect, test } from "bun:test";
import { authorizationPolicy, authorizationPolicyIssues } from "../helpers/policies.ts";
import { authorizerFor, type EndUser } from "../../src/proxy/authorization.ts";

const TD = "mesh.local";
const id = (service: string, ns = "shop") => `spiffe://${TD}/ns/${ns}/sa/${service}`;
const subject = { namespace: "shop", service: "payments", trustDomain: TD, httpPort: 8080 };
const ISSUER = "https://id.example.com";

const policy = authorizationPolicy;
const issues = authorizationPolicyIssues;

interface Req {
  caller?: string;
  method?: string;
  path?: string;
  headers?: [string, string][];
  user?: EndUser;
}
/** Whether one policy of `action` with `rule` lets the request in. */
function admitted(action: "allow" | "deny", rule: Record<string, unknown>, r: Req = {}): boolean {
  const authz = authorizerFor([policy({ service: "payments", action, rules: [rule] })], subject)!;
  return authz.check(r.caller ?? id("orders"), r.method ?? "GET", r.path ?? "/", (r.headers ?? []).flat(), [], r.user) === undefined;
}
const user = (sub: string, claims: Record<string, unknown> = {}): EndUser => ({ principal: `${ISSUER}/${sub}`, claims });

describe("schema", () => {
  test("not- fields are checked like their positive forms, and a condition needs values or notValues", () => {
    expect(
      issues({
        service: "payments",
        rules: [
          {
            from: { notServices: ["Orders"], notNamespaces: ["-x"], notIdentities: ["http://x"], notRequestPrincipals: ["a*b"] },
            to: { notMethods: ["bad method"], notPaths: ["relative"] },
            when: [{ header: "x-tenant" }, { header: "x-tenant", notValues: ["a,b"] }],
          },
        ],
      }),
    ).toEqual([
      expect.stringMatching(/^spec\.rules\[0\]\.from\.notServices\[0\]: /),
      expect.stringMatching(/^spec\.rules\[0\]\.from\.notNamespaces\[0\]: /),
      expect.stringMatching(/^spec\.rules\[0\]\.from\.notIdentities\[0\]: /),
      expect.stringMatching(/^spec\.rules\[0\]\.from\.notRequestPrincipals\[0\]: "\*" may stand only at the start or the end/),
      expect.stringMatching(/^spec\.rules\[0\]\.to\.notMethods\[0\]: expected an HTTP method/),
      expect.stringMatching(/^spec\.rules\[0\]\.to\.notPaths\[0\]: "relative": a path starts with "\/"/),
      "spec.rules[0].when[0].values: give values, notValues or both",
      expect.stringMatching(/^spec\.rules\[0\]\.when\[1\]\.notValues\[0\]: expected a single value/),
    ]);
  });

  test("notMethods are upper-cased", () => {
    expect(policy({ service: "payments", rules: [{ to: { notMethods: ["delete"] } }] }).spec.rules[0]!.to!.notMethods).toEqual(["DELETE"]);
  });
});

describe("callers", () => {
  test("deny /admin to everyone but ops: notServices with a path", () => {
    const rule = { from: { notServices: ["ops"] }, to: { paths: ["/admin/*"] } };
    expect(admitted("deny", rule, { caller: id("orders"), path: "/admin/keys" })).toBe(false);
    expect(admitted("deny", rule, { caller: id("ops"), path: "/admin/keys" })).toBe(true);
    expect(admitted("deny", rule, { caller: id("orders"), path: "/v1/charges" })).toBe(true);
    // A bare name means the policy's namespace: ops from another namespace is not ops.
    expect(admitted("deny", rule, { caller: id("ops", "dev"), path: "/admin/keys" })).toBe(false);
  });

  test("notNamespaces and notIdentities", () => {
    expect(admitted("allow", { from: { notNamespaces: ["dev"] } }, { caller: id("orders", "dev") })).toBe(false);
    expect(admitted("allow", { from: { notNamespaces: ["dev"] } }, { caller: id("orders", "shop") })).toBe(true);
    expect(admitted("allow", { from: { notIdentities: [id("orders")] } }, { caller: id("orders") })).toBe(false);
    expect(admitted("allow", { from: { notIdentities: [id("orders")] } }, { caller: id("billing") })).toBe(true);
  });

  test("a caller whose SPIFFE ID names no namespace is read the way that refuses", () => {
    const odd = `spiffe://${TD}/custom/workload`;
    expect(admitted("allow", { from: { notNamespaces: ["dev"] } }, { caller: odd })).toBe(false);
    expect(admitted("deny", { from: { notNamespaces: ["shop"] } }, { caller: odd })).toBe(false);
  });

  test("positive and not- fields of one source must all hold", () => {
    const rule = { from: { namespaces: ["shop"], notServices: ["legacy"] } };
    expect(admitted("allow", rule, { caller: id("orders") })).toBe(true);
    expect(admitted("allow", rule, { caller: id("legacy") })).toBe(false);
    expect(admitted("allow", rule, { caller: id("orders", "dev") })).toBe(false);
  });
});

describe("end users", () => {
  test('Istio\'s idiom: a deny with notRequestPrincipals ["*"] refuses every request without a verified token', () => {
    const rule = { from: { notRequestPrincipals: ["*"] } };
    expect(admitted("deny", rule, {})).toBe(false);
    expect(admitted("deny", rule, { user: user("alice") })).toBe(true);
  });

  test("notRequestPrincipals patterns exclude what they match; a request without a token matches", () => {
    const rule = { from: { notRequestPrincipals: [`${ISSUER}/bot-*`] } };
    expect(admitted("allow", rule, { user: user("bot-7") })).toBe(false);
    expect(admitted("allow", rule, { user: user("alice") })).toBe(true);
    expect(admitted("allow", rule, {})).toBe(true);
  });

  test("claim notValues: holds when no value of the claim is listed; no token or no claim holds none", () => {
    const rule = { when: [{ claim: "groups", notValues: ["suspended"] }] };
    expect(admitted("allow", rule, { user: user("a", { groups: ["staff", "suspended"] }) })).toBe(false);
    expect(admitted("allow", rule, { user: user("a", { groups: ["staff"] }) })).toBe(true);
    expect(admitted("allow", rule, { user: user("a") })).toBe(true);
    expect(admitted("allow", rule, {})).toBe(true);
    const scopes = { when: [{ claim: "scope", values: ["read"], notValues: ["admin"] }] };
    expect(admitted("allow", scopes, { user: user("a", { scope: "read write" }) })).toBe(true);
    expect(admitted("allow", scopes, { user: user("a", { scope: "read admin" }) })).toBe(false);
  });
});

describe("operations", () => {
  test("notMethods: matched in upper case, as the service reads them", () => {
    const readOnly = { to: { notMethods: ["GET", "HEAD"] } };
    expect(admitted("deny", readOnly, { method: "GET" })).toBe(true);
    expect(admitted("deny", readOnly, { method: "POST" })).toBe(false);
    expect(admitted("deny", readOnly, { method: "get" })).toBe(true);
    expect(admitted("deny", { to: { notMethods: ["POST"] } }, { method: "post" })).toBe(true);
  });

  test("notPaths: over the path in normal form, without the query", () => {
    const rule = { to: { notPaths: ["/health", "/public/*"] } };
    expect(admitted("deny", rule, { path: "/health?verbose=1" })).toBe(true);
    expect(admitted("deny", rule, { path: "/public/logo.png" })).toBe(true);
    expect(admitted("deny", rule, { path: "/v1/charges" })).toBe(false);
    expect(admitted("allow", { to: { paths: ["/v1/*"], notPaths: ["/v1/internal/*"] } }, { path: "/v1/internal/keys" })).toBe(false);
    expect(admitted("allow", { to: { paths: ["/v1/*"], notPaths: ["/v1/internal/*"] } }, { path: "/v1/charges" })).toBe(true);
  });
});

describe("header notValues, read the way that refuses", () => {
  const allow = { when: [{ header: "x-tenant", notValues: ["blocked"] }] };
  const deny = { when: [{ header: "x-tenant", notValues: ["acme"] }] };

  test("allow: no element may be listed, over every line and comma", () => {
    expect(admitted("allow", allow, { headers: [["x-tenant", "acme"]] })).toBe(true);
    expect(admitted("allow", allow, { headers: [["x-tenant", "acme, blocked"]] })).toBe(false);
    expect(admitted("allow", allow, { headers: [["x-tenant", "acme"], ["x-tenant", "blocked"]] })).toBe(false);
    expect(admitted("allow", allow, { headers: [["x_tenant", "blocked"]] })).toBe(false);
    // Absent, it holds none of the values.
    expect(admitted("allow", allow, {})).toBe(true);
  });

  test("deny: any element not listed, or none at all, refuses", () => {
    expect(admitted("deny", deny, { headers: [["x-tenant", "acme"]] })).toBe(true);
    expect(admitted("deny", deny, { headers: [["x-tenant", "acme, other"]] })).toBe(false);
    expect(admitted("deny", deny, { headers: [["x-tenant", "acme"], ["x-tenant", "other"]] })).toBe(false);
    expect(admitted("deny", deny, {})).toBe(false);
  });

  test("values and notValues together must both hold", () => {
    const both = { when: [{ header: "x-plan", values: ["pro", "team"], notValues: ["team"] }] };
    expect(admitted("allow", both, { headers: [["x-plan", "pro"]] })).toBe(true);
    expect(admitted("allow", both, { headers: [["x-plan", "team"]] })).toBe(false);
    expect(admitted("allow", both, { headers: [["x-plan", "pro, team"]] })).toBe(false);
  });
});
