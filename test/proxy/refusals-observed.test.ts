/**
 * Requests the proxy answers itself are observed like the ones it relays: a 401, 403 or
 * 429 at the inbound, a call to no known service at the outbound, each count in
 * mesh_requests_total and its latency histogram, get an access-log line and a span (with
 * the proxy's reason as error.type); a refused WebSocket upgrade counts as an upgrade,
 * not a request. Without this a service's success rate left out every request its
 * policies refused. Each is also told from a service's own answer of the same status:
 * mesh_local_replies_total counts it by its x-mesh-error, and its log line says it (mesh_error).
 */
import { beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { fixtureFor, metricValue, type EchoService } from "../helpers/mesh-fixture.ts";
import { accessLogLine, denyPaths, otlpCollector, spanAttr as attr, tracingFlags, type Collector } from "../helpers/observability.ts";
import { testIssuer } from "../helpers/policies.ts";
import { rawExchange } from "../helpers/raw-http.ts";
import { rawUpgrade } from "../helpers/ws-client.ts";
import { eventually } from "../helpers/wait.ts";

const fx = fixtureFor("orders", "payments");
const ISSUER = "https://issuer.example";

let collector: Collector;
let payments: EchoService;
let ports: { outbound: number; inbound: number; ordersAdmin: number; paymentsAdmin: number };
let logs: { orders: string; payments: string };

beforeAll(async () => {
  collector = otlpCollector();
  const issuer = await testIssuer(ISSUER);
  const policies = `${issuer.requestAuthentication("payments")}${denyPaths("payments", ["/admin", "/admin/*"])}---
apiVersion: mesh.dev/v1alpha1
kind: RateLimitPolicy
metadata: { name: payments }
spec:
  service: payments
  total: { requestsPerSecond: 0.01, burst: 4 }
`;
  payments = fx.echo("payments");
  const tracing = tracingFlags(collector);
  logs = { orders: join(fx.tmp.path, "orders.log"), payments: join(fx.tmp.path, "payments.log") };
  const p = await fx.proxy("payments", payments.url, fx.config("payments", {}, policies), [...tracing, "--access-log", logs.payments]);
  const o = await fx.proxy("orders", fx.echo("orders").url, fx.config("orders", { payments: [p.ports.inbound] }), [...tracing, "--access-log", logs.orders]);
  ports = { outbound: o.ports.outbound, inbound: p.ports.inbound, ordersAdmin: o.ports.admin, paymentsAdmin: p.ports.admin };
  return () => collector.stop();
});

async function call(target: string, headers: Record<string, string> = {}, host = "payments"): Promise<{ status: number; error: string | null }> {
  const lines = [`GET ${target} HTTP/1.1`, `Host: ${host}`, "Connection: close", ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`)];
  const r = await rawExchange(`${lines.join("\r\n")}\r\n\r\n`, { port: ports.outbound });
  return { status: r.statuses[0] ?? 0, error: /x-mesh-error: ([\w-]+)/i.exec(r.text)?.[1] ?? null };
}

const localReplies = (admin: number, labels: Record<string, string>) => metricValue(admin, "mesh_local_replies_total", labels);
const inbound4xx = () => metricValue(ports.paymentsAdmin, "mesh_requests_total", { direction: "inbound", peer: "orders", status: "4xx" });
const inboundLatencyCount = () => metricValue(ports.paymentsAdmin, "mesh_request_duration_ms_count", { direction: "inbound" });

describe("refusals at the inbound", () => {
  test.each([
    ["403: a deny policy", "/admin/keys", {}, "forbidden"],
    ["401: a token that is not valid", "/v1/charges", { authorization: "Bearer not.a.token" }, "unauthenticated"],
  ] as const)("%s counts as a 4xx request, in the latency histogram, the access log and a span", async (_why, path, headers, reason) => {
    const local = { direction: "inbound", peer: "orders", error: reason };
    const [before, latencies, replies] = [await inbound4xx(), await inboundLatencyCount(), await localReplies(ports.paymentsAdmin, local)];
    const hits = payments.hits;
    const r = await call(path, headers);
    expect([r.status, r.error]).toEqual([reason === "forbidden" ? 403 : 401, reason]);
    expect(payments.hits).toBe(hits);
    expect(await inbound4xx()).toBe(before + 1);
    expect(await inboundLatencyCount()).toBe(latencies + 1);
    expect(await localReplies(ports.paymentsAdmin, local)).toBe(replies + 1);
    // The caller's side saw the same answer, relayed: not its own.
    expect(await metricValue(ports.ordersAdmin, "mesh_requests_total", { direction: "outbound", peer: "payments", status: "4xx" })).toBeGreaterThanOrEqual(1);
    expect(await localReplies(ports.ordersAdmin, { direction: "outbound", peer: "payments" })).toBe(0);
    const line = await accessLogLine(logs.payments, path);
    expect([line.direction, line.status, line.mesh_error]).toEqual(["inbound", r.status, reason]);
    const relayed = await accessLogLine(logs.orders, path);
    expect([relayed.direction, relayed.status, relayed.mesh_error]).toEqual(["outbound", r.status, undefined]);
    const server = await collector.spanFor("payments", path);
    expect(server.kind).toBe(2);
    expect(attr(server, "http.response.status_code")).toBe(String(r.status));
    expect(attr(server, "error.type")).toBe(reason);
    expect(attr(server, "mesh.caller")).toBe("spiffe://mesh.local/ns/default/sa/orders");
    // It continues the caller's trace, like a relayed request.
    expect(await eventually(() => collector.spans.some((s) => s.service === "orders" && s.span.spanId === server.parentSpanId), 5000)).toBe(true);
    expect(collector.spans.find((s) => s.span.spanId === server.parentSpanId)!.span.traceId).toBe(server.traceId);
  });

  test("a request the service answers itself carries no mesh_error, and is no local reply (within the rate limit's burst)", async () => {
    const replies = await localReplies(ports.paymentsAdmin, { direction: "inbound" });
    const r = await call("/v1/served");
    expect([r.status, r.error]).toEqual([200, null]);
    expect((await accessLogLine(logs.payments, "/v1/served")).mesh_error).toBeUndefined();
    expect(await localReplies(ports.paymentsAdmin, { direction: "inbound" })).toBe(replies);
  });

  test("429: past the rate limit, each refusal counts once", async () => {
    const before = await inbound4xx();
    const statuses: number[] = [];
    for (let i = 0; i < 6; i++) statuses.push((await call("/v1/limited")).status);
    const refused = statuses.filter((s) => s === 429).length;
    expect(refused).toBeGreaterThanOrEqual(1);
    expect(await inbound4xx()).toBe(before + refused);
    expect(await metricValue(ports.paymentsAdmin, "mesh_rate_limited_total")).toBe(refused);
    expect(await localReplies(ports.paymentsAdmin, { direction: "inbound", peer: "orders", error: "rate-limited" })).toBe(refused);
  });

  test("a refused WebSocket upgrade counts as an upgrade, not as a request", async () => {
    const [requests, upgrades] = [await inbound4xx(), await metricValue(ports.paymentsAdmin, "mesh_websocket_upgrades_total", { direction: "inbound", status: "4xx" })];
    const r = await rawUpgrade(ports.outbound, "/admin/socket", "payments");
    expect(r.status).toBe(403);
    expect(await metricValue(ports.paymentsAdmin, "mesh_websocket_upgrades_total", { direction: "inbound", peer: "orders", status: "4xx" })).toBe(upgrades + 1);
    expect(await inbound4xx()).toBe(requests);
    expect(await localReplies(ports.paymentsAdmin, { direction: "inbound", peer: "orders", error: "forbidden" })).toBeGreaterThanOrEqual(1);
    expect((await accessLogLine(logs.payments, "/admin/socket")).mesh_error).toBe("forbidden");
  });
});

describe("refusals at the outbound", () => {
  test('a call to no known service counts under peer "unknown", with a log line and a CLIENT span', async () => {
    const before = await metricValue(ports.ordersAdmin, "mesh_requests_total", { direction: "outbound", peer: "unknown", status: "4xx" });
    const r = await call("/nowhere", {}, "ledger");
    expect([r.status, r.error]).toEqual([404, "no-route"]);
    expect(await metricValue(ports.ordersAdmin, "mesh_requests_total", { direction: "outbound", peer: "unknown", status: "4xx" })).toBe(before + 1);
    expect(await metricValue(ports.ordersAdmin, "mesh_request_duration_ms_count", { direction: "outbound", peer: "unknown" })).toBeGreaterThanOrEqual(1);
    expect(await localReplies(ports.ordersAdmin, { direction: "outbound", peer: "unknown", error: "no-route" })).toBeGreaterThanOrEqual(1);
    const line = await accessLogLine(logs.orders, "/nowhere");
    expect([line.status, line.mesh_error, line.mesh_overflow]).toEqual([404, "no-route", undefined]);
    const client = await collector.spanFor("orders", "/nowhere");
    expect(client.kind).toBe(3);
    expect(attr(client, "error.type")).toBe("no-route");
  });
});
