/**
 * WebSockets in the access log and in traces, as Envoy reports them: one line and one
 * span per upgrade on each sidecar, written when the session ends with status 101 and
 * the session's length (or with the refusal's status, when it never opened); the spans
 * nest caller → callee and the service's handshake carries the inbound span's
 * traceparent. Refusals before anything is opened upstream count in
 * mesh_websocket_upgrades_total too.
 */
import { beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { parseTraceParent } from "../../src/proxy/tracing/trace-context.ts";
import { fixtureFor, metricValue } from "../helpers/mesh-fixture.ts";
import { accessLogLine as lineFor, accessLogLines as lines, denyPaths, otlpCollector, spanAttr as attr, tracingFlags, type Collector } from "../helpers/observability.ts";
import { rawUpgrade, WsClient } from "../helpers/ws-client.ts";

const fx = fixtureFor("orders", "payments");

/** The traceparent each handshake brought the service, by path. */
const handshakes = new Map<string, string | null>();
let collector: Collector;
let logs: { orders: string; payments: string };
let ports: { outbound: number; ordersAdmin: number; paymentsAdmin: number };

beforeAll(async () => {
  collector = otlpCollector();
  const service = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    fetch(req, server) {
      const path = new URL(req.url).pathname;
      if (path === "/deny") return new Response("no", { status: 403 });
      handshakes.set(path, req.headers.get("traceparent"));
      return server.upgrade(req, { data: undefined }) ? undefined : new Response("not a websocket", { status: 400 });
    },
    websocket: { message: (ws, m) => void ws.send(m) },
  });
  const tracing = tracingFlags(collector);
  logs = { orders: join(fx.tmp.path, "orders.log"), payments: join(fx.tmp.path, "payments.log") };
  const payments = await fx.proxy("payments", `http://127.0.0.1:${service.port}`, fx.config("payments", {}, denyPaths("payments", ["/admin/*"])), [...tracing, "--access-log", logs.payments]);
  const orders = await fx.proxy("orders", fx.echo("orders").url, fx.config("orders", { payments: [payments.ports.inbound] }), [...tracing, "--access-log", logs.orders]);
  ports = { outbound: orders.ports.outbound, ordersAdmin: orders.ports.admin, paymentsAdmin: payments.ports.admin };
  return () => {
    collector.stop();
    service.stop(true);
  };
});

const spanFor = (service: string, path: string) => collector.spanFor(service, path);

describe("a WebSocket session", () => {
  test("gets one line and one span on each sidecar when it closes: status 101, the session's length, nested spans", async () => {
    const c = new WsClient(`ws://127.0.0.1:${ports.outbound}/chat`, { headers: { host: "payments" } });
    expect(await c.opened).toBe(true);
    c.ws.send("ping");
    expect(String(await c.next())).toBe("ping");
    await Bun.sleep(300);
    // Nothing is written while it is open.
    expect(lines(logs.orders).some((l) => l.path === "/chat")).toBe(false);
    c.ws.close(1000, "done");
    await c.closedWithin();

    const out = await lineFor(logs.orders, "/chat");
    expect(out).toMatchObject({ direction: "outbound", method: "GET", status: 101, peer: "payments" });
    expect(out.duration_ms).toBeGreaterThanOrEqual(300);
    const inb = await lineFor(logs.payments, "/chat");
    expect(inb).toMatchObject({ direction: "inbound", status: 101, peer: "spiffe://mesh.local/ns/default/sa/orders" });

    const client = await spanFor("orders", "/chat");
    const server = await spanFor("payments", "/chat");
    expect([client.kind, server.kind]).toEqual([3, 2]);
    expect(attr(server, "http.response.status_code")).toBe("101");
    expect(server.traceId).toBe(client.traceId);
    expect(server.parentSpanId).toBe(client.spanId);
    expect(BigInt(client.endTimeUnixNano) - BigInt(client.startTimeUnixNano)).toBeGreaterThanOrEqual(300_000_000n);
    // The service's handshake continues from the inbound's span.
    const sent = parseTraceParent(handshakes.get("/chat") ?? "");
    expect([sent?.traceId, sent?.parentId]).toEqual([server.traceId, server.spanId]);
  });

  test("refused by the service: a line and a span with its status, when it is answered", async () => {
    const r = await rawUpgrade(ports.outbound, "/deny", "payments");
    expect(r.status).toBe(403);
    expect((await lineFor(logs.orders, "/deny")).status).toBe(403);
    expect((await lineFor(logs.payments, "/deny")).status).toBe(403);
    expect(attr(await spanFor("payments", "/deny"), "http.response.status_code")).toBe("403");
  });

  test("refused by a policy at the inbound: logged, traced with the reason, counted as an upgrade", async () => {
    const before = await metricValue(ports.paymentsAdmin, "mesh_websocket_upgrades_total", { direction: "inbound", status: "4xx" });
    expect((await rawUpgrade(ports.outbound, "/admin/socket", "payments")).status).toBe(403);
    expect((await lineFor(logs.payments, "/admin/socket")).status).toBe(403);
    expect(attr(await spanFor("payments", "/admin/socket"), "error.type")).toBe("forbidden");
    expect(await metricValue(ports.paymentsAdmin, "mesh_websocket_upgrades_total", { direction: "inbound", status: "4xx" })).toBe(before + 1);
  });

  test("for no known service: 404 no-route, logged with no peer, traced, counted under unknown", async () => {
    expect((await rawUpgrade(ports.outbound, "/socket", "ledger")).status).toBe(404);
    const line = await lineFor(logs.orders, "/socket");
    expect([line.status, line.peer]).toEqual([404, ""]);
    expect(attr(await spanFor("orders", "/socket"), "error.type")).toBe("no-route");
    expect(await metricValue(ports.ordersAdmin, "mesh_websocket_upgrades_total", { direction: "outbound", peer: "unknown", status: "4xx" })).toBe(1);
  });
});
