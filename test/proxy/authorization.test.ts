/** AuthorizationPolicy: the schema's refusals, and the decisions of the compiled policies. */
import { describe, expect, test } from "bun:test";
import type { AuthorizationPolicy } from "../../src/config/kinds/authorization-policy.ts";
import { parseManifest } from "../../src/config/manifest.ts";
import "../../src/config/kinds/index.ts";
import { authorizerFor, dryRunAuthorizerFor, NO_ALLOW_MATCHED } from "../../src/proxy/authorization.ts";

const TD = "mesh.local";
const id = (service: string, ns = "shop") => `spiffe://${TD}/ns/${ns}/sa/${service}`;

function policy(name: string, spec: Record<string, unknown>, namespace = "shop"): AuthorizationPolicy {
  const r = parseManifest({ apiVersion: "mesh.dev/v1alpha1", kind: "AuthorizationPolicy", metadata: { name, namespace }, spec });
  if (!r.ok) throw new Error(JSON.stringify(r.issues));
  return r.manifest as AuthorizationPolicy;
}

function issues(spec: Record<string, unknown>): string[] {
  const r = parseManifest({ apiVersion: "mesh.dev/v1alpha1", kind: "AuthorizationPolicy", metadata: { name: "p", namespace: "shop" }, spec });
  return r.ok ? [] : r.issues.map((i) => `${i.path}: ${i.message}`);
}

/** Authorizer.check's arguments. */
const req = (caller: string, method: string, target: string, headers: [string, string][] = [], dropped: string[] = []) =>
  [caller, method, target, headers.flatMap(([n, v]) => [n, v]), dropped] as const;

const subject = { namespace: "shop", service: "payments", trustDomain: TD, httpPort: 8080 };

describe("schema", () => {
  test("what no request could match, or a rule cannot see, is refused with its place", () => {
    const found = issues({
      service: "payments",
      rules: [
        {
          from: { services: ["orders", "billing.finance", "Orders", "a.b.c"], identities: ["spiffe://mesh.local/ns/x/sa/../y"] },
          to: { methods: ["get", "bad method"], paths: ["/ok", "/v1/*", "*.json", "*", "/a//b", "/a/*/b", "**", "relative", "/a?x", "/%61"] },
          when: [{ header: "x-tenant", values: ["a", "b,c", " d"] }, { header: "x-mesh-client-id", values: ["x"] }, { header: "Connection", values: ["x"] }],
        },
      ],
    });
    expect(found).toEqual([
      expect.stringMatching(/^spec\.rules\[0\]\.from\.services\[2\]: caller "Orders" must be a DNS label/),
      expect.stringMatching(/^spec\.rules\[0\]\.from\.services\[3\]: "a\.b\.c": expected name or name\.namespace/),
      expect.stringMatching(/^spec\.rules\[0\]\.from\.identities\[0\]: .*'\.\.'/),
      expect.stringMatching(/^spec\.rules\[0\]\.to\.methods\[1\]: expected an HTTP method/),
      expect.stringMatching(/^spec\.rules\[0\]\.to\.paths\[4\]: "\/a\/\/b": not in normal form/),
      expect.stringMatching(/^spec\.rules\[0\]\.to\.paths\[5\]: "\/a\/\*\/b": "\*" may stand only at the start or the end/),
      expect.stringMatching(/^spec\.rules\[0\]\.to\.paths\[6\]: "\*\*"/),
      expect.stringMatching(/^spec\.rules\[0\]\.to\.paths\[7\]: "relative": a path starts with "\/"/),
      expect.stringMatching(/^spec\.rules\[0\]\.to\.paths\[8\]: "\/a\?x": paths are matched without the query/),
      expect.stringMatching(/^spec\.rules\[0\]\.to\.paths\[9\]: "\/%61": not in normal form/),
      expect.stringMatching(/^spec\.rules\[0\]\.when\[0\]\.values\[1\]: expected a single value/),
      expect.stringMatching(/^spec\.rules\[0\]\.when\[0\]\.values\[2\]: expected a single value/),
      expect.stringMatching(/^spec\.rules\[0\]\.when\[1\]\.header: "x-mesh-client-id" is removed or set by the proxy/),
      expect.stringMatching(/^spec\.rules\[0\]\.when\[2\]\.header: "connection" is removed or set by the proxy/),
    ]);
  });

  test("service is required; a deny policy without rules is refused; unknown fields are named", () => {
    expect(issues({ rules: [] })).toEqual([expect.stringMatching(/^spec\.service: /)]);
    expect(issues({ service: "payments", action: "deny", rules: [] })).toEqual([expect.stringMatching(/^spec\.rules: a deny policy without rules denies nothing/)]);
    expect(issues({ service: "payments", action: "audit", rules: [] })[0]).toMatch(/^spec\.action: /);
    expect(issues({ service: "payments", rules: [{ from: { principals: ["x"] } }] })[0]).toMatch(/principals/);
  });

  test("methods are upper-cased and header names lower-cased", () => {
    const p = policy("p", { service: "payments", rules: [{ to: { methods: ["get"] }, when: [{ header: "X-Tenant", values: ["a"] }] }] });
    expect(p.spec.action).toBe("allow");
    expect(p.spec.rules[0]!.to!.methods).toEqual(["GET"]);
    expect(p.spec.rules[0]!.when![0]!.header).toBe("x-tenant");
  });
});

describe("decisions", () => {
  test("no policy for the service: no authorizer, every caller is let in", () => {
    expect(authorizerFor([], subject)).toBeUndefined();
    expect(authorizerFor([policy("other", { service: "orders", rules: [] })], subject)).toBeUndefined();
    expect(authorizerFor([policy("elsewhere", { service: "payments", rules: [] }, "other")], subject)).toBeUndefined();
  });

  test("an allow policy lets in what a rule matches and nothing else", () => {
    const a = authorizerFor([policy("orders-charge", { service: "payments", rules: [{ from: { services: ["orders"] }, to: { methods: ["POST"], paths: ["/v1/charges", "/v1/charges/*"] } }] })], subject)!;
    expect(a.check(...req(id("orders"), "POST", "/v1/charges"))).toBeUndefined();
    expect(a.check(...req(id("orders"), "POST", "/v1/charges/42?x=1"))).toBeUndefined();
    expect(a.check(...req(id("orders"), "GET", "/v1/charges"))).toEqual({ policy: NO_ALLOW_MATCHED, detail: expect.any(String) });
    expect(a.check(...req(id("orders"), "POST", "/v1/chargesX"))?.policy).toBe(NO_ALLOW_MATCHED);
    expect(a.check(...req(id("orders"), "POST", "/v1/refunds"))?.policy).toBe(NO_ALLOW_MATCHED);
    expect(a.check(...req(id("web"), "POST", "/v1/charges"))?.policy).toBe(NO_ALLOW_MATCHED);
    // Same service name, other namespace: another identity.
    expect(a.check(...req(id("orders", "other"), "POST", "/v1/charges"))?.policy).toBe(NO_ALLOW_MATCHED);
  });

  test("an allow policy with no rules allows nothing; one with rules: [{}] allows everything", () => {
    const none = authorizerFor([policy("nothing", { service: "payments", rules: [] })], subject)!;
    expect(none.check(...req(id("orders"), "GET", "/"))?.policy).toBe(NO_ALLOW_MATCHED);
    const all = authorizerFor([policy("nothing", { service: "payments", rules: [] }), policy("all", { service: "*", rules: [{}] })], subject)!;
    expect(all.check(...req(id("orders"), "GET", "/"))).toBeUndefined();
  });

  test("a dry-run policy is not enforced; the dry-run authorizer decides as if it were", () => {
    const all = policy("all", { service: "payments", rules: [{}] });
    const audit = policy("audit-admin", { service: "payments", action: "deny", mode: "dry-run", rules: [{ to: { paths: ["/admin/*"] } }] });
    expect(authorizerFor([all, audit], subject)!.check(...req(id("orders"), "GET", "/admin/x"))).toBeUndefined();
    expect(dryRunAuthorizerFor([all, audit], subject)!.check(...req(id("orders"), "GET", "/admin/x"))?.policy).toBe("shop/audit-admin");
    expect(dryRunAuthorizerFor([all, audit], subject)!.check(...req(id("orders"), "GET", "/x"))).toBeUndefined();
    expect(dryRunAuthorizerFor([all], subject)).toBeUndefined();
    // Only dry-run policies: nothing is enforced, and an allow in dry run counts what it would leave out.
    const onlyOrders = policy("only-orders", { service: "payments", mode: "dry-run", rules: [{ from: { services: ["orders"] } }] });
    expect(authorizerFor([onlyOrders], subject)).toBeUndefined();
    expect(dryRunAuthorizerFor([onlyOrders], subject)!.check(...req(id("web"), "GET", "/"))?.policy).toBe(NO_ALLOW_MATCHED);
  });

  test("deny wins over allow, and names the policy", () => {
    const a = authorizerFor(
      [
        policy("all", { service: "payments", rules: [{}] }),
        policy("no-admin", { service: "*", action: "deny", rules: [{ to: { paths: ["/admin", "/admin/*"] } }] }),
      ],
      subject,
    )!;
    expect(a.check(...req(id("orders"), "GET", "/admin"))).toEqual({ policy: "shop/no-admin", detail: expect.any(String) });
    expect(a.check(...req(id("orders"), "GET", "/admin/users"))?.policy).toBe("shop/no-admin");
    expect(a.check(...req(id("orders"), "GET", "/administrator"))).toBeUndefined();
  });

  test("callers by service in another namespace, by namespace, by SPIFFE ID: fields of a source must all match", () => {
    const a = authorizerFor(
      [
        policy("p", {
          service: "payments",
          rules: [{ from: { services: ["billing.finance"] } }, { from: { namespaces: ["ops"] } }, { from: { identities: [id("audit", "sec")] } }, { from: { namespaces: ["shop"], services: ["web"] } }],
        }),
      ],
      subject,
    )!;
    expect(a.check(...req(id("billing", "finance"), "GET", "/"))).toBeUndefined();
    expect(a.check(...req(id("billing"), "GET", "/"))?.policy).toBe(NO_ALLOW_MATCHED);
    expect(a.check(...req(id("anything", "ops"), "GET", "/"))).toBeUndefined();
    expect(a.check(...req(id("audit", "sec"), "GET", "/"))).toBeUndefined();
    expect(a.check(...req(id("web"), "GET", "/"))).toBeUndefined();
    expect(a.check(...req(id("orders"), "GET", "/"))?.policy).toBe(NO_ALLOW_MATCHED);
    expect(a.check(...req("spiffe://mesh.local/other/path", "GET", "/"))?.policy).toBe(NO_ALLOW_MATCHED);
  });

  test("path suffixes and *", () => {
    const a = authorizerFor([policy("p", { service: "payments", rules: [{ to: { paths: ["*.json"] } }, { to: { methods: ["OPTIONS"], paths: ["*"] } }] })], subject)!;
    expect(a.check(...req(id("orders"), "GET", "/a/b.json?x=.html"))).toBeUndefined();
    expect(a.check(...req(id("orders"), "GET", "/a/b.html?x=.json"))?.policy).toBe(NO_ALLOW_MATCHED);
    expect(a.check(...req(id("orders"), "OPTIONS", "*"))).toBeUndefined();
  });

  describe("headers: repeated or comma-joined values are read the way that refuses", () => {
    const allow = authorizerFor([policy("tenant", { service: "payments", rules: [{ when: [{ header: "x-tenant", values: ["acme", "globex"] }] }] })], subject)!;
    const deny = authorizerFor([policy("all", { service: "payments", rules: [{}] }), policy("no-root", { service: "payments", action: "deny", rules: [{ when: [{ header: "x-role", values: ["root"] }] }] })], subject)!;
    const caller = id("orders");

    test("allow: every element must be listed, and at least one present", () => {
      expect(allow.check(...req(caller, "GET", "/", [["x-tenant", "acme"]]))).toBeUndefined();
      expect(allow.check(...req(caller, "GET", "/", [["x-tenant", "acme, globex"]]))).toBeUndefined();
      expect(allow.check(...req(caller, "GET", "/", [["x-tenant", "acme"], ["x-tenant", "initech"]]))?.policy).toBe(NO_ALLOW_MATCHED);
      expect(allow.check(...req(caller, "GET", "/", [["x-tenant", "acme,initech"]]))?.policy).toBe(NO_ALLOW_MATCHED);
      expect(allow.check(...req(caller, "GET", "/", []))?.policy).toBe(NO_ALLOW_MATCHED);
      expect(allow.check(...req(caller, "GET", "/", [["x-tenant", " , "]]))?.policy).toBe(NO_ALLOW_MATCHED);
      expect(allow.check(...req(caller, "GET", "/", [["x-tenant", "ACME"]]))?.policy).toBe(NO_ALLOW_MATCHED);
    });

    test("deny: any element listed, on any line", () => {
      expect(deny.check(...req(caller, "GET", "/", [["x-role", "root"]]))?.policy).toBe("shop/no-root");
      expect(deny.check(...req(caller, "GET", "/", [["x-role", "user, root"]]))?.policy).toBe("shop/no-root");
      expect(deny.check(...req(caller, "GET", "/", [["x-role", "user"], ["x-role", "root"]]))?.policy).toBe("shop/no-root");
      expect(deny.check(...req(caller, "GET", "/", [["x-role", "user"]]))).toBeUndefined();
      expect(deny.check(...req(caller, "GET", "/", []))).toBeUndefined();
    });

    test("a header the client lists in Connection is dropped before the service, so a rule does not see it either", () => {
      expect(allow.check(...req(caller, "GET", "/", [["x-tenant", "acme"]], ["x-tenant"]))?.policy).toBe(NO_ALLOW_MATCHED);
      expect(deny.check(...req(caller, "GET", "/", [["x-role", "root"]], ["x-role"]))).toBeUndefined();
    });
  });
});
