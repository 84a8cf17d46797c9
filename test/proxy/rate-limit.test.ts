/** RateLimitPolicy: the schema, the token buckets on a fake clock, and the limits through real sidecars. */
import { beforeAll, describe, expect, test } from "bun:test";
import type { RateLimitPolicy } from "../../src/config/kinds/rate-limit-policy.ts";
import { parseManifest } from "../../src/config/manifest.ts";
import "../../src/config/kinds/index.ts";
import { RateLimiter, rateLimiterFor } from "../../src/proxy/rate-limit.ts";
import { mesh } from "../helpers/cli.ts";
import { fixtureFor, metricValue } from "../helpers/mesh-fixture.ts";
import { rawUpgrade } from "../helpers/ws-client.ts";

const id = (service: string, ns = "shop") => `spiffe://mesh.local/ns/${ns}/sa/${service}`;
const subject = { namespace: "shop", service: "payments", trustDomain: "mesh.local" };

function parse(spec: Record<string, unknown>, name = "payments") {
  return parseManifest({ apiVersion: "mesh.dev/v1alpha1", kind: "RateLimitPolicy", metadata: { name, namespace: "shop" }, spec });
}
function policy(spec: Record<string, unknown>, name = "payments"): RateLimitPolicy {
  const r = parse(spec, name);
  if (!r.ok) throw new Error(JSON.stringify(r.issues));
  return r.manifest as RateLimitPolicy;
}

class Clock {
  t = 0;
  now = () => this.t;
}

describe("schema", () => {
  test("a policy limits something; rates are positive; the service defaults to the name", () => {
    const issues = (spec: Record<string, unknown>) => {
      const r = parse(spec);
      return r.ok ? [] : r.issues.map((i) => `${i.path}: ${i.message}`);
    };
    expect(issues({})).toEqual([expect.stringContaining("set total, perCaller or overrides")]);
    expect(issues({ total: { requestsPerSecond: 0 } })[0]).toMatch(/^spec\.total\.requestsPerSecond: /);
    expect(issues({ perCaller: { requestsPerSecond: 5, burst: 0.5 } })[0]).toMatch(/^spec\.perCaller\.burst: /);
    expect(issues({ overrides: [{ from: { services: ["Orders"] }, requestsPerSecond: 1 }] })[0]).toMatch(/^spec\.overrides\[0\]\.from\.services\[0\]: /);
    expect(policy({ total: { requestsPerSecond: 5 } }).spec.service).toBe("payments");
  });
});

describe("buckets", () => {
  test("per caller: a burst, then one request per refill; Retry-After says when", () => {
    const clock = new Clock();
    const limiter = new RateLimiter(policy({ perCaller: { requestsPerSecond: 2, burst: 3 } }), "mesh.local", clock.now);
    const orders = id("orders");
    expect([1, 2, 3].map(() => limiter.admit(orders))).toEqual([undefined, undefined, undefined]);
    expect(limiter.admit(orders)).toEqual({ limit: "caller", retryAfterS: 1 });
    // Another caller has its own bucket.
    expect(limiter.admit(id("web"))).toBeUndefined();
    clock.t += 500; // one token back at 2 per second
    expect(limiter.admit(orders)).toBeUndefined();
    expect(limiter.admit(orders)?.limit).toBe("caller");
    clock.t += 60_000; // refilled to the burst, not beyond
    expect([1, 2, 3, 4].map(() => limiter.admit(orders) === undefined)).toEqual([true, true, true, false]);
  });

  test("slow rates: Retry-After is the wait for the next token, in whole seconds", () => {
    const clock = new Clock();
    const limiter = new RateLimiter(policy({ total: { requestsPerSecond: 0.1 } }), "mesh.local", clock.now);
    expect(limiter.admit(id("orders"))).toBeUndefined();
    expect(limiter.admit(id("orders"))).toEqual({ limit: "total", retryAfterS: 10 });
    clock.t += 2500;
    expect(limiter.admit(id("web"))).toEqual({ limit: "total", retryAfterS: 8 });
  });

  test("the total limit is shared; a request refused by one bucket takes no token from the other", () => {
    const clock = new Clock();
    const limiter = new RateLimiter(policy({ total: { requestsPerSecond: 1, burst: 3 }, perCaller: { requestsPerSecond: 1, burst: 2 } }), "mesh.local", clock.now);
    expect(limiter.admit(id("orders"))).toBeUndefined();
    expect(limiter.admit(id("orders"))).toBeUndefined();
    // Over its own limit: refused without spending the shared third token.
    expect(limiter.admit(id("orders"))?.limit).toBe("caller");
    expect(limiter.admit(id("web"))).toBeUndefined();
    expect(limiter.admit(id("billing"))?.limit).toBe("total");
  });

  test("overrides: the first that matches a caller sets its limit; others get perCaller, or none", () => {
    const clock = new Clock();
    const limiter = new RateLimiter(
      policy({
        perCaller: { requestsPerSecond: 1, burst: 1 },
        overrides: [
          { from: { services: ["batch"] }, requestsPerSecond: 1, burst: 5 },
          { from: { namespaces: ["ops"] }, requestsPerSecond: 1, burst: 2 },
        ],
      }),
      "mesh.local",
      clock.now,
    );
    const passed = (caller: string) => [1, 2, 3, 4, 5, 6].filter(() => limiter.admit(caller) === undefined).length;
    expect(passed(id("batch"))).toBe(5);
    expect(passed(id("tool", "ops"))).toBe(2);
    expect(passed(id("orders"))).toBe(1);
    expect(passed(id("batch", "other"))).toBe(1); // "batch" means shop/batch
    const onlyOverrides = new RateLimiter(policy({ overrides: [{ from: { services: ["batch"] }, requestsPerSecond: 1, burst: 1 }] }), "mesh.local", clock.now);
    expect([1, 2, 3].filter(() => onlyOverrides.admit(id("orders")) === undefined)).toHaveLength(3);
    expect([1, 2, 3].filter(() => onlyOverrides.admit(id("batch")) === undefined)).toHaveLength(1);
  });

  test("a new config with the same policy keeps the buckets; a changed one starts over; another service's is not this one's", () => {
    const p = policy({ total: { requestsPerSecond: 0.1, burst: 1 } });
    const first = rateLimiterFor([p], subject, 1)!;
    expect(first.admit(id("orders"))).toBeUndefined();
    const same = rateLimiterFor([policy({ total: { requestsPerSecond: 0.1, burst: 1 } })], subject, 1, first);
    expect(same).toBe(first);
    expect(same!.admit(id("orders"))?.limit).toBe("total");
    const changed = rateLimiterFor([policy({ total: { requestsPerSecond: 0.1, burst: 2 } })], subject, 1, first);
    expect(changed).not.toBe(first);
    expect(changed!.admit(id("orders"))).toBeUndefined();
    expect(rateLimiterFor([policy({ total: { requestsPerSecond: 1 } }, "orders")], subject, 1)).toBeUndefined();
  });

  test("scope: service: each sidecar lets in 1/N of every rate and burst, at least 1; scope: sidecar ignores N", () => {
    const clock = new Clock();
    const shared = policy({ scope: "service", total: { requestsPerSecond: 10, burst: 9 }, perCaller: { requestsPerSecond: 4, burst: 4 } });
    const third = new RateLimiter(shared, "mesh.local", clock.now, 3);
    // perCaller: burst 4/3 → 1; total: burst 9/3 → 3.
    expect([1, 2].map(() => third.admit(id("orders")))).toEqual([undefined, { limit: "caller", retryAfterS: 1 }]);
    expect([id("a"), id("b"), id("c")].map((c) => third.admit(c)?.limit)).toEqual([undefined, undefined, "total"]);
    clock.t += 400; // total refills at 10/3 per second: a token in 300 ms
    expect(third.admit(id("d"))).toBeUndefined();
    const many = new RateLimiter(shared, "mesh.local", clock.now, 100);
    expect([1, 2].map(() => many.admit(id("x")) === undefined)).toEqual([true, false]);
    const own = new RateLimiter(policy({ total: { requestsPerSecond: 10, burst: 9 } }), "mesh.local", clock.now, 3);
    expect(Array.from({ length: 10 }, (_, i) => own.admit(id(`s${i}`)) === undefined).filter(Boolean)).toHaveLength(9);
  });

  test("a new instance count re-divides a service's limits; a sidecar-scoped limiter is kept", () => {
    const shared = policy({ scope: "service", total: { requestsPerSecond: 6 } });
    const two = rateLimiterFor([shared], subject, 2)!;
    expect(rateLimiterFor([shared], subject, 2, two)).toBe(two);
    const three = rateLimiterFor([shared], subject, 3, two)!;
    expect([three.instances, rateLimiterFor([shared], subject, 0)!.instances]).toEqual([3, 1]);
    const own = rateLimiterFor([policy({ total: { requestsPerSecond: 6 } })], subject, 2)!;
    expect(rateLimiterFor([policy({ total: { requestsPerSecond: 6 } })], subject, 5, own)).toBe(own);
  });
});

describe("a new instance count carries the buckets on", () => {
  const shared = policy({ scope: "service", total: { requestsPerSecond: 0.01, burst: 12 }, perCaller: { requestsPerSecond: 0.01, burst: 12 } });
  const drain = (limiter: RateLimiter, caller: string) => {
    let passed = 0;
    while (limiter.admit(id(caller)) === undefined) passed++;
    return passed;
  };

  test("an emptied bucket stays empty when instances come or go: a re-count is no refill", () => {
    const clock = new Clock();
    const three = new RateLimiter(shared, "mesh.local", clock.now, 3);
    expect(drain(three, "orders")).toBe(4); // 12/3
    const two = new RateLimiter(shared, "mesh.local", clock.now, 2, three);
    const four = new RateLimiter(shared, "mesh.local", clock.now, 4, three);
    expect([two.admit(id("orders"))?.limit, four.admit(id("orders"))?.limit]).toEqual(["caller", "caller"]);
    // Another caller: its own bucket is new and full, but the total is as empty as it was.
    expect(two.admit(id("web"))?.limit).toBe("total");
  });

  test("a bucket half used is half full at the new share; a new policy starts over", () => {
    const clock = new Clock();
    const two = new RateLimiter(shared, "mesh.local", clock.now, 2);
    expect([1, 2, 3].map(() => two.admit(id("orders")))).toEqual([undefined, undefined, undefined]); // 3 of 6
    expect(drain(new RateLimiter(shared, "mesh.local", clock.now, 1, two), "orders")).toBe(6); // half of 12
    expect(drain(new RateLimiter(shared, "mesh.local", clock.now, 3, two), "orders")).toBe(2); // half of 4
    expect(drain(rateLimiterFor([shared], subject, 1)!, "orders")).toBe(12);
  });
});

describe("through real sidecars", () => {
  const fx = fixtureFor("orders", "web", "billing", "payments");
  const LIMITS = `---
apiVersion: mesh.dev/v1alpha1
kind: RateLimitPolicy
metadata:
  name: payments
spec:
  perCaller: { requestsPerSecond: 0.1, burst: 3 }
  overrides:
    - from: { services: [web] }
      requestsPerSecond: 0.1
      burst: 1
`;
  let ports: { orders: number; web: number; billing: number; admin: number };
  let hits: () => number;

  beforeAll(async () => {
    const payments = fx.echo("payments");
    hits = () => payments.hits;
    const p = await fx.proxy("payments", payments.url, fx.config("payments", {}, LIMITS));
    const orders = await fx.proxy("orders", fx.echo("orders").url, fx.config("orders", { payments: [p.ports.inbound] }));
    const web = await fx.proxy("web", fx.echo("web").url, fx.config("web", { payments: [p.ports.inbound] }));
    const billing = await fx.proxy("billing", fx.echo("billing").url, fx.config("billing", { payments: [p.ports.inbound] }));
    ports = { orders: orders.ports.outbound, web: web.ports.outbound, billing: billing.ports.outbound, admin: p.ports.admin };
  });

  const call = async (outbound: number) => {
    const res = await fetch(`http://127.0.0.1:${outbound}/pay`, { headers: { host: "payments" } });
    await res.arrayBuffer();
    return { status: res.status, error: res.headers.get("x-mesh-error"), retryAfter: res.headers.get("retry-after") };
  };

  test("each caller gets its burst, then 429 rate-limited with Retry-After, never reaching the service; counted", async () => {
    const before = hits();
    const orders = [];
    for (let i = 0; i < 5; i++) orders.push(await call(ports.orders));
    expect(orders.map((r) => r.status)).toEqual([200, 200, 200, 429, 429]);
    expect(orders[3]).toEqual({ status: 429, error: "rate-limited", retryAfter: expect.stringMatching(/^(9|10)$/) });
    const web = [await call(ports.web), await call(ports.web)];
    expect(web.map((r) => r.status)).toEqual([200, 429]);
    expect(hits()).toBe(before + 4);
    expect(await metricValue(ports.admin, "mesh_rate_limited_total", { peer: "orders", limit: "caller" })).toBe(2);
    expect(await metricValue(ports.admin, "mesh_rate_limited_total", { peer: "web", limit: "caller" })).toBe(1);
    const dump = (await (await fetch(`http://127.0.0.1:${ports.admin}/config_dump`)).json()) as { rateLimit: { policy: string } };
    expect(dump.rateLimit.policy).toBe("default/payments");
  });

  test("a WebSocket upgrade takes one token, though it is admitted on both sides of the tunnel", async () => {
    // The service is no WebSocket server: it answers the upgrade with a plain response, after the token was taken.
    expect((await rawUpgrade(ports.billing, "/socket", "payments")).status).not.toBe(429);
    expect([(await call(ports.billing)).status, (await call(ports.billing)).status, (await call(ports.billing)).status]).toEqual([200, 200, 429]);
  });

  test("two RateLimitPolicies for one service in a config file are refused at start, naming the second", async () => {
    const file = fx.config("two-limits", {}, LIMITS + LIMITS.replace("name: payments\nspec:", "name: again\nspec:\n  service: payments"));
    const r = await mesh("proxy", "--service", "payments", "--upstream", "http://127.0.0.1:9", "--config", file, "--certs-dir", `${fx.tmp.path}/certs/payments`);
    expect(r.code).toBe(65);
    expect(r.err).toContain(`${file}#1 spec.service: a second RateLimitPolicy for "payments" in namespace "default"`);
  });
});
