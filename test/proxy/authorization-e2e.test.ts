/**
 * AuthorizationPolicy through real sidecars with a static config: callers and requests a
 * policy refuses get 403 at the service's inbound and never reach it, the path rules match
 * is the path the service receives (threats.md: dot segments, encodings, slashes), deny
 * wins, WebSocket upgrades are checked too, and refusals are counted.
 */
import { beforeAll, describe, expect, test } from "bun:test";
import { clientTls } from "../helpers/data-plane.ts";
import { fixtureFor, metricValue, type EchoService } from "../helpers/mesh-fixture.ts";
import { rawExchange } from "../helpers/raw-http.ts";
import { rawUpgrade } from "../helpers/ws-client.ts";
import { wsService } from "../helpers/ws-service.ts";

const fx = fixtureFor("orders", "web", "payments");

const POLICIES = `---
apiVersion: mesh.dev/v1alpha1
kind: AuthorizationPolicy
metadata:
  name: charges
spec:
  service: payments
  rules:
    - from: { services: [orders] }
      to: { methods: [GET, POST], paths: [/v1/charges, /v1/charges/*] }
    - from: { services: [web] }
      to: { methods: [GET], paths: [/v1/charges/*] }
      when:
        - header: x-tenant
          values: [acme]
    - to: { paths: [/socket, /missing] }
---
apiVersion: mesh.dev/v1alpha1
kind: AuthorizationPolicy
metadata:
  name: no-internal
spec:
  service: payments
  action: deny
  rules:
    - to: { paths: [/v1/charges/internal, /v1/charges/internal/*] }
---
apiVersion: mesh.dev/v1alpha1
kind: AuthorizationPolicy
metadata:
  name: admin-orders-only
spec:
  service: payments
  action: deny
  rules:
    - from: { notServices: [orders] }
      to: { paths: [/v1/charges/admin/*] }
---
apiVersion: mesh.dev/v1alpha1
kind: AuthorizationPolicy
metadata:
  name: audit-refunds
spec:
  service: payments
  action: deny
  mode: dry-run
  rules:
    - to: { paths: [/v1/charges/refunds/*] }
---
apiVersion: mesh.dev/v1alpha1
kind: AuthorizationPolicy
metadata:
  name: not-mine
spec:
  service: orders
  rules: []
`;

let payments: EchoService;
let ports: { orders: number; web: number; paymentsAdmin: number; wsOrders: number; wsInbound: number; wsAdmin: number };

beforeAll(async () => {
  payments = fx.echo("payments");
  const paymentsProxy = await fx.proxy("payments", payments.url, fx.config("payments", {}, POLICIES));
  const orders = await fx.proxy("orders", fx.echo("orders").url, fx.config("orders", { payments: [paymentsProxy.ports.inbound] }));
  const web = await fx.proxy("web", fx.echo("web").url, fx.config("web", { payments: [paymentsProxy.ports.inbound] }));
  // A second payments sidecar in front of a WebSocket service, same policies.
  const ws = wsService();
  const wsPayments = await fx.proxy("payments", ws.url, fx.config("payments-ws", {}, POLICIES));
  const wsOrders = await fx.proxy("orders", fx.echo("orders").url, fx.config("orders-ws", { payments: [wsPayments.ports.inbound] }));
  ports = { orders: orders.ports.outbound, web: web.ports.outbound, paymentsAdmin: paymentsProxy.ports.admin, wsOrders: wsOrders.ports.outbound, wsInbound: wsPayments.ports.inbound, wsAdmin: wsPayments.ports.admin };
});

/** One request through a caller's outbound, its target sent byte for byte. */
async function call(outbound: number, method: string, target: string, headers: Record<string, string> = {}): Promise<{ status: number; error: string | null; body: string }> {
  const lines = [`${method} ${target} HTTP/1.1`, "Host: payments", "Connection: close", ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`)];
  const r = await rawExchange(`${lines.join("\r\n")}\r\n\r\n`, { port: outbound });
  const [head = "", body = ""] = r.text.split("\r\n\r\n");
  return { status: r.statuses[0] ?? 0, error: /x-mesh-error: ([\w-]+)/i.exec(head)?.[1] ?? null, body };
}

describe("who may call what", () => {
  test("orders may GET and POST charges; the service sees the request", async () => {
    const before = payments.hits;
    const r = await call(ports.orders, "POST", "/v1/charges", { "content-length": "0" });
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body)).toMatchObject({ path: "/v1/charges", caller: "spiffe://mesh.local/ns/default/sa/orders" });
    expect((await call(ports.orders, "GET", "/v1/charges/42?expand=1")).status).toBe(200);
    expect(payments.hits).toBe(before + 2);
  });

  test("what no allow rule matches gets 403 forbidden and never reaches the service", async () => {
    const before = payments.hits;
    for (const [outbound, method, target] of [
      [ports.orders, "DELETE", "/v1/charges/42"],
      [ports.orders, "GET", "/v1/refunds"],
      [ports.web, "POST", "/v1/charges"],
      [ports.web, "GET", "/v1/charges/42"], // no x-tenant
    ] as const) {
      const r = await call(outbound, method, target);
      expect([method, target, r.status, r.error]).toEqual([method, target, 403, "forbidden"]);
      expect(r.body).toContain("no authorization policy allows this request");
    }
    expect(payments.hits).toBe(before);
  });

  test("a header condition: web with x-tenant acme is let in; a second value or line is not", async () => {
    expect((await call(ports.web, "GET", "/v1/charges/1", { "x-tenant": "acme" })).status).toBe(200);
    expect((await call(ports.web, "GET", "/v1/charges/1", { "x-tenant": "acme, initech" })).status).toBe(403);
    const twoLines = await rawExchange("GET /v1/charges/1 HTTP/1.1\r\nHost: payments\r\nX-Tenant: acme\r\nX-Tenant: initech\r\nConnection: close\r\n\r\n", { port: ports.web });
    expect(twoLines.statuses[0]).toBe(403);
    // Listed in Connection, the header is dropped before the service, so the rule cannot see it either.
    expect((await call(ports.web, "GET", "/v1/charges/1", { "x-tenant": "acme", connection: "close, x-tenant" })).status).toBe(403);
  });

  test("deny wins over allow, and the denials are counted by policy", async () => {
    const r = await call(ports.orders, "GET", "/v1/charges/internal/keys");
    expect([r.status, r.error]).toEqual([403, "forbidden"]);
    expect(r.body).toContain("denied by an authorization policy");
    expect(await metricValue(ports.paymentsAdmin, "mesh_authorization_denied_total", { peer: "orders", policy: "default/no-internal" })).toBeGreaterThanOrEqual(1);
    expect(await metricValue(ports.paymentsAdmin, "mesh_authorization_denied_total", { peer: "web", policy: "no-allow-matched" })).toBeGreaterThanOrEqual(2);
  });

  test("a deny with notServices: only orders reaches the admin paths, which web's allow rule would let in", async () => {
    expect((await call(ports.orders, "GET", "/v1/charges/admin/rotate")).status).toBe(200);
    expect((await call(ports.web, "GET", "/v1/charges/7", { "x-tenant": "acme" })).status).toBe(200);
    const r = await call(ports.web, "GET", "/v1/charges/admin/rotate", { "x-tenant": "acme" });
    expect([r.status, r.error]).toEqual([403, "forbidden"]);
    expect(await metricValue(ports.paymentsAdmin, "mesh_authorization_denied_total", { peer: "web", policy: "default/admin-orders-only" })).toBe(1);
  });

  test("/config_dump shows the policies in force, and only this service's", async () => {
    const dump = (await (await fetch(`http://127.0.0.1:${ports.paymentsAdmin}/config_dump`)).json()) as { authorization: { policy: string; action: string }[] };
    expect(dump.authorization.map((p) => [p.policy, p.action])).toEqual([
      ["default/charges", "allow"],
      ["default/no-internal", "deny"],
      ["default/admin-orders-only", "deny"],
      ["default/audit-refunds", "deny"],
    ]);
  });

  test("a dry-run policy refuses nothing; what it would refuse is counted", async () => {
    const before = await metricValue(ports.paymentsAdmin, "mesh_authorization_dry_run_denied_total", { peer: "orders", policy: "default/audit-refunds" });
    expect((await call(ports.orders, "GET", "/v1/charges/refunds/7")).status).toBe(200);
    expect((await call(ports.orders, "GET", "/v1/charges/7")).status).toBe(200);
    expect(await metricValue(ports.paymentsAdmin, "mesh_authorization_dry_run_denied_total", { peer: "orders", policy: "default/audit-refunds" })).toBe(before + 1);
  });
});

describe("rules match the path the service receives", () => {
  test.each([
    ["/v1/charges/../../admin", 403, undefined],
    ["/v1/charges/%2e%2e/%2e%2e/admin", 403, undefined],
    ["/v1/charges/x/../internal/keys", 403, undefined],
    ["/v1/charges/%69nternal/keys", 403, undefined],
    ["/v1/charges//internal/keys", 403, undefined],
    ["/v1//charges/7", 200, "/v1/charges/7"],
    ["/%76%31/charges/./7", 200, "/v1/charges/7"],
    ["/v1/refunds/../charges/8", 200, "/v1/charges/8"],
  ] as const)("%s → %d", async (target, status, seen) => {
    const r = await call(ports.orders, "GET", target);
    expect(r.status).toBe(status);
    if (seen) expect(JSON.parse(r.body).path).toBe(seen);
  });

  test.each(["/v1/charges/..%2F..%2Fadmin", "/v1/charges/x%5C..%5Cadmin", "/v1/charges/%00", "/v1/charges/..;/internal/keys", "/v1/charges/%zz"])(
    "%s is refused as ambiguous (400), counted, and never reaches the service",
    async (target) => {
      const before = payments.hits;
      const refusedBefore = await metricValue(ports.paymentsAdmin, "mesh_requests_refused_total", { direction: "inbound", reason: "path" });
      const r = await call(ports.orders, "GET", target);
      expect([r.status, r.error]).toEqual([400, "bad-request"]);
      expect(payments.hits).toBe(before);
      expect(await metricValue(ports.paymentsAdmin, "mesh_requests_refused_total", { direction: "inbound", reason: "path" })).toBe(refusedBefore + 1);
    },
  );
});

describe("WebSocket upgrades", () => {
  test("an upgrade to an allowed path goes through; a denied one gets 403 before any tunnel", async () => {
    expect((await rawUpgrade(ports.wsOrders, "/socket", "payments")).status).toBe(101);
    expect((await rawUpgrade(ports.wsOrders, "/v1/charges/internal/live", "payments")).status).toBe(403);
    expect((await rawUpgrade(ports.wsOrders, "/elsewhere", "payments")).status).toBe(403);
    expect(await metricValue(ports.wsAdmin, "mesh_authorization_denied_total", { peer: "orders" })).toBe(2);
  });

  const upgradeHead = (path: string) =>
    `GET ${path} HTTP/1.1\r\nHost: payments\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`;
  const upgrade = (path: string, thenWrite?: string) =>
    rawExchange(upgradeHead(path), { port: ports.wsInbound, tls: clientTls(fx, "orders"), ...(thenWrite && { thenWrite: { afterMs: 300, bytes: thenWrite } }) });

  test("an upgrade the service refused closes its connection: nothing sent behind it rides the tunnel", async () => {
    const r = await upgrade("/missing", `GET /v1/charges/internal/keys HTTP/1.1\r\nHost: payments\r\n\r\n${upgradeHead("/v1/charges/internal/live")}`);
    expect(r.statuses).toEqual([404]);
    expect(r.text.toLowerCase()).toContain("connection: close");
    expect(r.closed).toBe(true);
  });

  test("at the inbound itself: an upgrade whose path would need rewriting is refused, since the tunnel carries its bytes as sent", async () => {
    expect((await upgrade("/socket")).statuses[0]).toBe(101);
    const r = await upgrade("/x/../socket");
    expect(r.statuses[0]).toBe(400);
    expect(r.text).toContain("a WebSocket upgrade's path must be in normal form");
    expect(r.closed).toBe(true);
    const denied = await upgrade("/v1/charges/internal/live");
    expect(denied.statuses[0]).toBe(403);
    expect(denied.text.toLowerCase()).toContain("x-mesh-error: forbidden");
  });
});
