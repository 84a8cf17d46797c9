/**
 * A client that hangs up in the middle of a response body ends that request once: it
 * is counted once, and it leaves nothing in flight, so a drain afterwards is clean. One
 * that hangs up before the response head cancels the service's request, at each proxy.
 * (The relay used to hear of such an end twice, from the client's side and from the
 * abandoned upstream exchange, and an in-flight count below zero held every later
 * drain to its deadline.)
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { clientTls, eventually } from "../helpers/data-plane.ts";
import { MeshFixture, metricValue } from "../helpers/mesh-fixture.ts";
import { exchangeWith, rawExchange } from "../helpers/raw-http.ts";

const fx = new MeshFixture();
// A response whose body never ends by itself: its first piece, then nothing.
const streaming = Bun.serve({
  hostname: "127.0.0.1",
  port: 0,
  fetch: () =>
    new Response(
      new ReadableStream({
        start(controller) {
          controller.enqueue(new TextEncoder().encode("first piece\n"));
        },
      }),
    ),
});
let payments: Awaited<ReturnType<MeshFixture["proxy"]>>;
let orders: Awaited<ReturnType<MeshFixture["proxy"]>>;

beforeAll(async () => {
  await fx.init();
  await fx.issue("orders");
  await fx.issue("payments");
  payments = await fx.proxy("payments", `http://127.0.0.1:${streaming.port}`, undefined, ["--drain-timeout", "10s"]);
  orders = await fx.proxy("orders", fx.echo("orders").url, fx.config("orders", { payments: [payments.ports.inbound] }), ["--drain-timeout", "10s"]);
});
afterAll(async () => {
  await fx.close();
  void streaming.stop(true);
  void slow.server.stop(true);
});

/** Holds each request for 5 s unless its caller goes away first; counts both outcomes. */
const slow = { started: 0, aborted: 0, completed: 0, server: undefined as unknown as ReturnType<typeof Bun.serve> };
slow.server = Bun.serve({
  hostname: "127.0.0.1",
  port: 0,
  fetch: async (req) => {
    slow.started++;
    const aborted = await new Promise<boolean>((resolve) => {
      const t = setTimeout(() => resolve(false), 5000);
      req.signal.addEventListener("abort", () => (clearTimeout(t), resolve(true)), { once: true });
    });
    if (aborted) slow.aborted++;
    else slow.completed++;
    return new Response("done");
  },
});

const GET = "GET /stream HTTP/1.1\r\nHost: payments\r\n\r\n";

test("hanging up mid-body, through the outbound and straight at the inbound: each request is counted once", async () => {
  const outboundBefore = await metricValue(orders.ports.admin, "mesh_requests_total", { direction: "outbound" });
  const inboundBefore = await metricValue(payments.ports.admin, "mesh_requests_total", { direction: "inbound" });
  for (const [port, tls] of [[orders.ports.outbound, undefined], [payments.ports.inbound, clientTls(fx, "orders")]] as const) {
    const r = await exchangeWith({ port, ...(tls ? { tls } : {}) }, GET, { quietMs: 300 });
    expect(r.statuses).toEqual([200]);
    expect(r.text).toContain("first piece");
  }
  // Through the outbound: one request at each proxy; straight at the inbound: one more there.
  expect(await eventually(async () => (await metricValue(payments.ports.admin, "mesh_requests_total", { direction: "inbound" })) - inboundBefore === 2)).toBe(true);
  await Bun.sleep(200); // a second count, if any, would have landed by now
  expect((await metricValue(orders.ports.admin, "mesh_requests_total", { direction: "outbound" })) - outboundBefore).toBe(1);
  expect((await metricValue(payments.ports.admin, "mesh_requests_total", { direction: "inbound" })) - inboundBefore).toBe(2);
});

test("after those hang-ups nothing is left in flight: SIGTERM drains both proxies cleanly and at once", async () => {
  for (const p of [orders, payments]) {
    const started = performance.now();
    p.proc.kill("SIGTERM");
    expect(await p.proc.exited).toBe(0);
    // Well inside the 10 s drain deadline, which a stuck in-flight count would wait out.
    expect(performance.now() - started).toBeLessThan(5000);
  }
});

test("hanging up before the response head, through the outbound and straight at the inbound: the service's request is cancelled, counted as 4xx", async () => {
  const slowPayments = await fx.proxy("payments", `http://127.0.0.1:${slow.server.port}`);
  const slowOrders = await fx.proxy("orders", fx.echo("orders").url, fx.config("orders-slow", { payments: [slowPayments.ports.inbound] }));
  for (const [port, tls] of [[slowOrders.ports.outbound, undefined], [slowPayments.ports.inbound, clientTls(fx, "orders")]] as const) {
    const before = { started: slow.started, aborted: slow.aborted };
    // No reply within 600 ms, then the client closes its connection.
    const r = await rawExchange("GET /slow HTTP/1.1\r\nHost: payments\r\n\r\n", { port, ...(tls ? { tls } : {}), quietMs: 100, timeoutMs: 600 });
    expect(r.statuses).toEqual([]);
    expect(slow.started).toBe(before.started + 1);
    // Cancelled well before the service's 5 s, not run to its end.
    expect(await eventually(() => slow.aborted === before.aborted + 1, 3000)).toBe(true);
  }
  expect(slow.completed).toBe(0);
  expect(await metricValue(slowOrders.ports.admin, "mesh_requests_total", { direction: "outbound", status: "4xx" })).toBe(1);
  expect(await metricValue(slowPayments.ports.admin, "mesh_requests_total", { direction: "inbound", status: "4xx" })).toBe(2);
  expect(await metricValue(slowPayments.ports.admin, "mesh_requests_total", { direction: "inbound", status: "5xx" })).toBe(0);
});
