/**
 * AuthorizationPolicy for opaque TCP connections (Authorizer.checkConnection): only the
 * caller is seen, so a rule that names a method, path, header or token cannot allow a
 * connection, and is read without those parts when it denies (Istio's rule).
 */
import { describe, expect, test } from "bun:test";
import type { AuthorizationPolicy } from "../../src/config/kinds/authorization-policy.ts";
import { parseManifest } from "../../src/config/manifest.ts";
import "../../src/config/kinds/index.ts";
import { authorizerFor, NO_ALLOW_MATCHED } from "../../src/proxy/authorization.ts";

const TD = "mesh.local";
const id = (service: string, ns = "shop") => `spiffe://${TD}/ns/${ns}/sa/${service}`;
const subject = { namespace: "shop", service: "db", trustDomain: TD, httpPort: 8080 };

function policy(name: string, spec: Record<string, unknown>): AuthorizationPolicy {
  const r = parseManifest({ apiVersion: "mesh.dev/v1alpha1", kind: "AuthorizationPolicy", metadata: { name, namespace: "shop" }, spec });
  if (!r.ok) throw new Error(JSON.stringify(r.issues));
  return r.manifest as AuthorizationPolicy;
}

const decide = (policies: AuthorizationPolicy[], caller: string, port = 5432) => authorizerFor(policies, subject)?.checkConnection(caller, port)?.policy ?? "allowed";

describe("allow policies", () => {
  test("a caller rule allows the callers it names, and no other", () => {
    const p = [policy("orders-only", { service: "db", rules: [{ from: { services: ["orders"] } }] })];
    expect(decide(p, id("orders"))).toBe("allowed");
    expect(decide(p, id("web"))).toBe(NO_ALLOW_MATCHED);
    expect(decide(p, id("orders", "other"))).toBe(NO_ALLOW_MATCHED);
  });

  test("a rule that also names methods, paths, headers or end users allows no connection", () => {
    for (const extra of [
      { to: { methods: ["GET"] } },
      { to: { paths: ["/"] } },
      { to: { notPaths: ["/admin"] } },
      { when: [{ header: "x-tenant", values: ["acme"] }] },
      { from: { services: ["orders"], requestPrincipals: ["*"] } },
      { from: { services: ["orders"], notRequestPrincipals: ["https://id/x"] } },
    ]) {
      const rule = { from: { services: ["orders"] }, ...extra };
      expect(decide([policy("http-only", { service: "db", rules: [rule] })], id("orders"))).toBe(NO_ALLOW_MATCHED);
    }
  });

  test("an empty rule allows every caller; no rules allows none", () => {
    expect(decide([policy("all", { service: "db", rules: [{}] })], id("web"))).toBe("allowed");
    expect(decide([policy("none", { service: "db", rules: [] })], id("orders"))).toBe(NO_ALLOW_MATCHED);
  });

  test("with no policy every caller may connect", () => {
    expect(decide([], id("web"))).toBe("allowed");
  });
});

describe("deny policies", () => {
  test("a deny rule on callers refuses them, before any allow", () => {
    const p = [
      policy("all", { service: "db", rules: [{}] }),
      policy("no-web", { service: "db", action: "deny", rules: [{ from: { services: ["web"] } }] }),
    ];
    expect(decide(p, id("web"))).toBe("shop/no-web");
    expect(decide(p, id("orders"))).toBe("allowed");
  });

  test("a deny rule's HTTP parts are left out: it refuses the callers it names, whatever they would send", () => {
    const p = [policy("no-admin", { service: "db", action: "deny", rules: [{ from: { services: ["web"] }, to: { methods: ["DELETE"], paths: ["/admin/*"] } }] })];
    expect(decide(p, id("web"))).toBe("shop/no-admin");
    expect(decide(p, id("orders"))).toBe("allowed");
    const any = [policy("no-get", { service: "db", action: "deny", rules: [{ to: { methods: ["GET"] } }] })];
    expect(decide(any, id("orders"))).toBe("shop/no-get");
  });

  test("not- caller fields read as for requests: a caller outside the list is refused", () => {
    const p = [policy("only-orders", { service: "db", action: "deny", rules: [{ from: { notServices: ["orders"] } }] })];
    expect(decide(p, id("orders"))).toBe("allowed");
    expect(decide(p, id("web"))).toBe("shop/only-orders");
  });
});

describe("ports", () => {
  test("an allow rule with ports lets its callers reach those ports only; notPorts, all others", () => {
    const p = [policy("pg", { service: "db", rules: [{ from: { services: ["orders"] }, to: { ports: [5432] } }] })];
    expect(decide(p, id("orders"), 5432)).toBe("allowed");
    expect(decide(p, id("orders"), 6379)).toBe(NO_ALLOW_MATCHED);
    expect(decide(p, id("web"), 5432)).toBe(NO_ALLOW_MATCHED);
    const notRedis = [policy("not-redis", { service: "db", rules: [{ to: { notPorts: [6379] } }] })];
    expect(decide(notRedis, id("web"), 5432)).toBe("allowed");
    expect(decide(notRedis, id("web"), 6379)).toBe(NO_ALLOW_MATCHED);
  });

  test("a deny rule with ports refuses those ports only, and its HTTP parts are still left out", () => {
    const p = [policy("no-redis-for-web", { service: "db", action: "deny", rules: [{ from: { services: ["web"] }, to: { ports: [6379], methods: ["GET"] } }] })];
    expect(decide(p, id("web"), 6379)).toBe("shop/no-redis-for-web");
    expect(decide(p, id("web"), 5432)).toBe("allowed");
    expect(decide(p, id("orders"), 6379)).toBe("allowed");
  });

  test("HTTP requests go to the port of the sidecar's --upstream", () => {
    const p = [policy("http-port", { service: "db", rules: [{ to: { ports: [8080] } }] })];
    expect(authorizerFor(p, subject)!.check(id("web"), "GET", "/", [], [])).toBeUndefined();
    expect(authorizerFor(p, { ...subject, httpPort: 9090 })!.check(id("web"), "GET", "/", [], [])?.policy).toBe(NO_ALLOW_MATCHED);
    const deny = [policy("no-http", { service: "db", action: "deny", rules: [{ to: { notPorts: [5432] } }] })];
    expect(authorizerFor(deny, subject)!.check(id("web"), "GET", "/", [], [])?.policy).toBe("shop/no-http");
    expect(decide(deny, id("web"), 5432)).toBe("allowed");
  });

  test("ports outside 1-65535, and empty lists, are refused with the field named", () => {
    const r = parseManifest({ apiVersion: "mesh.dev/v1alpha1", kind: "AuthorizationPolicy", metadata: { name: "x", namespace: "shop" }, spec: { service: "db", rules: [{ to: { ports: [5432, 70000], notPorts: [] } }] } });
    expect(r.ok).toBe(false);
    expect(r.ok ? [] : r.issues).toEqual([
      { path: "spec.rules[0].to.ports[1]", message: "expected port 1-65535" },
      { path: "spec.rules[0].to.notPorts", message: "expected at least 1 item" },
    ]);
  });
});
