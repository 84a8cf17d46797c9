/**
 * Review of HTTPRoute (9f33441) as a user and an attacker would use it: host forms,
 * namespaces, duplicate headers, WebSocket upgrades, a backend without endpoints or with
 * another identity, huge weights, metrics, /config_dump; then through a control plane:
 * routes chained across services for a subscriber with --calls, static + pushed routes
 * merged, a pushed route removed without restart.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { mesh, tempDir } from "../helpers/cli.ts";
import { cpSidecar, eventually, serviceManifest, startControlPlane, type Sidecar, type TestControlPlane } from "../helpers/control-plane.ts";
import { fixtureFor, metricValue } from "../helpers/mesh-fixture.ts";
import { stopAll } from "../helpers/procs.ts";
import { rawExchange } from "../helpers/raw-http.ts";
import { rawUpgrade } from "../helpers/ws-client.ts";
import { manifestIssues } from "../helpers/policies.ts";

/** An HTTP + WebSocket service that says who it is and counts upgrades. */
interface Named {
  server: ReturnType<typeof Bun.serve>;
  url: string;
  hits: number;
  upgrades: number;
}
const servers: Named[] = [];
function named(name: string): Named {
  const s: Named = { server: undefined as never, url: "", hits: 0, upgrades: 0 };
  s.server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    fetch(req, server) {
      if (req.headers.get("upgrade")?.toLowerCase() === "websocket") {
        s.upgrades++;
        if (server.upgrade(req, { data: undefined })) return undefined;
        return new Response("no upgrade", { status: 400 });
      }
      s.hits++;
      return Response.json({ service: name, path: new URL(req.url).pathname });
    },
    websocket: { message(ws, m) { ws.send(m); } },
  });
  s.url = `http://127.0.0.1:${s.server.port}`;
  servers.push(s);
  return s;
}
afterAll(() => {
  for (const s of servers) s.server.stop(true);
});

describe("static config, one caller sidecar", () => {
  const fx = fixtureFor("orders", "payments", "payments-canary");
  let orders: { ports: { outbound: number; admin: number } };
  let payments: Named, canary: Named, impostor: Named;

  beforeAll(async () => {
    payments = named("payments");
    canary = named("payments-canary");
    impostor = named("impostor");
    const pp = await fx.proxy("payments", payments.url);
    const cp = await fx.proxy("payments-canary", canary.url);
    // Presents payments' identity, serves where payments-v2 is said to be.
    const ip = await fx.proxy("payments", impostor.url);
    const routes = `---
apiVersion: mesh.dev/v1alpha1
kind: Service
metadata: { name: payments-empty }
spec:
  ports: [{ name: http, port: 80 }]
  endpoints: []
---
apiVersion: mesh.dev/v1alpha1
kind: Service
metadata: { name: payments, namespace: shop }
spec:
  ports: [{ name: http, port: 80 }]
  endpoints: [{ address: 127.0.0.1, port: 9 }]
---
apiVersion: mesh.dev/v1alpha1
kind: Service
metadata: { name: payments-canary, namespace: shop }
spec:
  ports: [{ name: http, port: 80 }]
  endpoints: [{ address: 127.0.0.1, port: 9 }]
---
apiVersion: mesh.dev/v1alpha1
kind: HTTPRoute
metadata: { name: shop-route, namespace: shop }
spec:
  service: payments
  rules: [{ backends: [{ service: payments-canary }] }]
---
apiVersion: mesh.dev/v1alpha1
kind: HTTPRoute
metadata: { name: payments-route }
spec:
  service: payments
  rules:
    - matches: [{ headers: [{ name: X-Canary, value: "1" }] }]
      backends: [{ service: payments-canary }]
    - matches: [{ path: { prefix: /v2 } }]
      backends: [{ service: payments-v2 }]
    - matches: [{ path: { prefix: /empty } }]
      backends: [{ service: payments-empty }]
    - matches: [{ method: delete }]
      backends: [{ service: payments, weight: 1000000 }, { service: payments-canary, weight: 1000000 }]
`;
    const config = fx.config("orders", { payments: [pp.ports.inbound], "payments-canary": [cp.ports.inbound], "payments-v2": [ip.ports.inbound] }, routes);
    orders = await fx.proxy("orders", "http://127.0.0.1:9", config);
  });

  const call = (host: string, path = "/x", headers: Record<string, string> = {}, method = "GET") =>
    fetch(`http://127.0.0.1:${orders.ports.outbound}${path}`, { method, headers: { host, ...headers } });
  async function answeredBy(host: string, path = "/x", headers: Record<string, string> = {}, method = "GET"): Promise<string> {
    const res = await call(host, path, headers, method);
    expect(res.status).toBe(200);
    return ((await res.json()) as { service: string }).service;
  }

  test("every host form of the routed service is routed: payments, payments:80, PAYMENTS, payments.default, payments.default.svc.cluster.local", async () => {
    for (const host of ["payments", "payments:80", "PAYMENTS", "payments.default", "payments.default.svc.cluster.local", "payments.default.svc"]) {
      expect(await answeredBy(host, "/x", { "x-canary": "1" })).toBe("payments-canary");
      expect(await answeredBy(host, "/x")).toBe("payments");
    }
  });

  test("a route in namespace shop for 'payments' does not touch payments in default; the canary itself is not routed", async () => {
    for (let i = 0; i < 5; i++) expect(await answeredBy("payments")).toBe("payments");
    expect(await answeredBy("payments-canary", "/x", { "x-canary": "1" })).toBe("payments-canary");
  });

  test("a header sent twice is read as one value, its lines joined with ', ' (as documented): neither line alone matches", async () => {
    const send = (first: string, second: string) =>
      rawExchange(`GET /x HTTP/1.1\r\nHost: payments\r\nX-Canary: ${first}\r\nX-Canary: ${second}\r\nConnection: close\r\n\r\n`, { port: orders.ports.outbound, quietMs: 300 });
    for (const [first, second] of [["1", "2"], ["2", "1"]] as const) {
      const r = await send(first, second);
      expect(r.statuses).toEqual([200]);
      expect(r.text).toContain('"service":"payments"');
    }
  });

  test("path prefix by whole segments, matched as sent (query ignored)", async () => {
    expect(await answeredBy("payments", "/v2x")).toBe("payments");
    expect(await answeredBy("payments", "/x?p=/v2")).toBe("payments");
  });

  test("a backend whose identity differs cannot be reached by a sidecar presenting the parent's identity", async () => {
    const before = impostor.hits;
    const res = await call("payments", "/v2/charges");
    expect(res.status).toBeGreaterThanOrEqual(500);
    expect(res.status).not.toBe(500);
    await res.text();
    expect(impostor.hits).toBe(before);
  });

  test("a backend with no endpoints answers 503, not 500, and the proxy stays up", async () => {
    const res = await call("payments", "/empty/x");
    expect(res.status).toBe(503);
    await res.text();
    expect(await answeredBy("payments")).toBe("payments");
  });

  test("huge weights split between both backends", async () => {
    const seen = new Set<string>();
    for (let i = 0; i < 40 && seen.size < 2; i++) seen.add(await answeredBy("payments", "/x", {}, "DELETE"));
    expect([...seen].sort()).toEqual(["payments", "payments-canary"]);
  });

  test("a routed call is counted under the backend it went to", async () => {
    const peer = { direction: "outbound", peer: "payments-canary", status: "2xx" };
    const before = await metricValue(orders.ports.admin, "mesh_requests_total", peer);
    for (let i = 0; i < 3; i++) await answeredBy("payments", "/x", { "x-canary": "1" });
    expect(await metricValue(orders.ports.admin, "mesh_requests_total", peer)).toBe(before + 3);
  });

  test("WebSocket upgrades are routed as plain calls are: by header", async () => {
    const [p0, c0] = [payments.upgrades, canary.upgrades];
    const r = await rawUpgrade(orders.ports.outbound, "/ws", "payments", { "X-Canary": "1" });
    expect(r.status).toBe(101);
    expect(canary.upgrades).toBe(c0 + 1);
    expect(payments.upgrades).toBe(p0);
  });

  test("WebSocket upgrades: a header sent twice is read as a plain call reads it (lines joined)", async () => {
    const [c0, p0] = [canary.upgrades, payments.upgrades];
    // Two header lines, differently cased so both are sent.
    const r = await rawUpgrade(orders.ports.outbound, "/ws", "payments", { "X-Canary": "1", "x-canary": "2" });
    expect(r.status).toBe(101);
    expect([canary.upgrades, payments.upgrades]).toEqual([c0, p0 + 1]);
  });

  test("WebSocket upgrades: a backend of another identity is refused, not reached", async () => {
    const before = impostor.upgrades;
    const r = await rawUpgrade(orders.ports.outbound, "/v2/ws", "payments.default.svc.cluster.local");
    expect(r.status).not.toBe(101);
    expect(impostor.upgrades).toBe(before);
  });

  test("/config_dump shows both routes, applied", async () => {
    const dump = (await (await fetch(`http://127.0.0.1:${orders.ports.admin}/config_dump`)).json()) as { routes: { route: string; applied: boolean }[] };
    expect(dump.routes.map((r) => [r.route, r.applied]).sort()).toEqual([["default/payments-route", true], ["shop/shop-route", true]]);
  });
});

describe("schema", () => {
  const issues = (spec: Record<string, unknown>) => manifestIssues("HTTPRoute", spec);
  test("a header value with a line break or surrounding spaces can never match and is refused", () => {
    expect(issues({ service: "p", rules: [{ matches: [{ headers: [{ name: "x", value: "a\r\nb" }] }], backends: [{ service: "q" }] }] }).length).toBeGreaterThan(0);
    expect(issues({ service: "p", rules: [{ matches: [{ headers: [{ name: "x", value: " a " }] }], backends: [{ service: "q" }] }] }).length).toBeGreaterThan(0);
  });
});

describe("through a control plane", () => {
  const tmp = tempDir("mesh-routes-review-");
  let cp: TestControlPlane;
  let admin: string[];
  let ordersA: Sidecar; // --calls payments
  let ordersB: Sidecar; // every service, plus a static route
  const file = (name: string, text: string) => {
    const path = join(tmp.path, name);
    writeFileSync(path, text);
    return path;
  };
  const route = (name: string, service: string, backend: string) =>
    `apiVersion: mesh.dev/v1alpha1\nkind: HTTPRoute\nmetadata: { name: ${name} }\nspec:\n  service: ${service}\n  rules: [{ backends: [{ service: ${backend} }] }]\n`;

  beforeAll(async () => {
    cp = await startControlPlane(tmp.path);
    await cp.apply(serviceManifest("orders"), serviceManifest("payments"), serviceManifest("payments-v2"), serviceManifest("payments-v3"));
    const tokenFile = join(tmp.path, "admin.token");
    writeFileSync(tokenFile, cp.adminToken);
    admin = ["--admin-url", `http://127.0.0.1:${cp.ports.admin}`, "--admin-token-file", tokenFile];
    for (const s of ["payments", "payments-v2", "payments-v3"]) await cpSidecar(cp, tmp.path, s, "1", named(s).url);
    ordersA = await cpSidecar(cp, tmp.path, "orders", "1", "http://127.0.0.1:9", ["--calls", "payments"]);
    const statics = file(
      "orders-static.yaml",
      ["payments", "payments-v3"].map((s) => `apiVersion: mesh.dev/v1alpha1\nkind: Service\nmetadata: { name: ${s} }\nspec:\n  ports: [{ name: http, port: 80 }]\n  endpoints: [{ address: 127.0.0.1, port: 9 }]\n`).join("---\n") +
        "---\n" + route("static-route", "payments", "payments-v3"),
    );
    ordersB = await cpSidecar(cp, tmp.path, "orders", "2", "http://127.0.0.1:9", ["--config", statics]);
  }, 60_000);
  afterAll(async () => {
    await stopAll();
    tmp.cleanup();
  });

  const answeredBy = async (sc: Sidecar) => {
    const res = await fetch(`http://127.0.0.1:${sc.ports.outbound}/x`, { headers: { host: "payments" } });
    if (res.status !== 200) return `status ${res.status}`;
    return ((await res.json()) as { service: string }).service;
  };
  const settlesOn = (sc: Sidecar, service: string) =>
    eventually(async () => {
      for (let i = 0; i < 5; i++) if ((await answeredBy(sc)) !== service) return false;
      return true;
    }, 10_000, 100);

  test("a static route applies beside the control plane's services", async () => {
    expect(await settlesOn(ordersA, "payments")).toBe(true);
    expect(await settlesOn(ordersB, "payments-v3")).toBe(true);
  });

  test("routes chained across services (payments→v2, v2→v3): a --calls payments subscriber still takes the config and routes to v2", async () => {
    // Names sort so the v2 route comes before the payments route in the control plane's order.
    expect((await mesh("apply", ...admin, "-f", file("a.yaml", route("a-v2", "payments-v2", "payments-v3")))).code).toBe(0);
    expect((await mesh("apply", ...admin, "-f", file("z.yaml", route("z-payments", "payments", "payments-v2")))).code).toBe(0);
    // The control plane's route wins over the static one for payments.
    expect(await settlesOn(ordersB, "payments-v2")).toBe(true);
    const settled = await settlesOn(ordersA, "payments-v2");
    // On failure, the sidecar's own words: it refused the pushed config.
    expect(settled ? "" : ordersA.stderr().split("\n").filter((l) => /reject|HTTPRoute/i.test(l)).slice(-2).join("\n")).toBe("");
    expect(settled).toBe(true);
  }, 30_000);

  test("the routed service itself cannot be deleted under its route", async () => {
    const r = await mesh("delete", ...admin, "Service", "payments");
    expect(r.code).not.toBe(0);
    expect(r.err).toContain("HTTPRoute");
  });

  test("the pushed route deleted: without restart, the static route is back and the --calls subscriber goes to payments", async () => {
    expect((await mesh("delete", ...admin, "HTTPRoute", "z-payments")).code).toBe(0);
    expect(await settlesOn(ordersB, "payments-v3")).toBe(true);
    expect(await settlesOn(ordersA, "payments")).toBe(true);
  }, 30_000);
});
