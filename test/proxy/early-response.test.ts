/**
 * A service may answer before it has read a request's body (Bun.serve, Node and nginx
 * all can). The proxy's listener then reads the rest of that body and drops it, as its
 * Content-Length says where it ends, and keeps the connection for the next request;
 * a body too large to drain gets `connection: close` in the response and the
 * connection ends. Before this, every such POST closed the pair's pooled connection,
 * and the next POST sent on it before the close was seen failed with a 502 (a POST is
 * never replayed).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { clientTls } from "../helpers/data-plane.ts";
import { MeshFixture } from "../helpers/mesh-fixture.ts";
import { exchangeWith, type RawListener } from "../helpers/raw-http.ts";

const fx = new MeshFixture();
const seen: string[] = [];
// Answers at once, never reading the body.
const early = Bun.serve({
  hostname: "127.0.0.1",
  port: 0,
  fetch(req) {
    seen.push(`${req.method} ${new URL(req.url).pathname}`);
    return new Response("early\n");
  },
});
const sides: Record<"outbound" | "inbound", RawListener> = {} as never;
let inboundAdmin = 0;

beforeAll(async () => {
  await fx.init();
  await fx.issue("orders");
  await fx.issue("payments");
  const payments = await fx.proxy("payments", `http://127.0.0.1:${early.port}`);
  const orders = await fx.proxy("orders", fx.echo("orders").url, fx.config("orders", { payments: [payments.ports.inbound] }));
  sides.outbound = { port: orders.ports.outbound };
  sides.inbound = { port: payments.ports.inbound, tls: clientTls(fx, "orders") };
  inboundAdmin = payments.ports.admin;
});
afterAll(async () => {
  await fx.close();
  void early.stop(true);
});

const H = "Host: payments\r\n";

function heads(text: string): string[] {
  return text.split(/\r\n\r\n/).filter((part) => part.startsWith("HTTP/1.1 "));
}

async function inboundConnections(): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${inboundAdmin}/metrics`)).text();
  return Number(/^mesh_connections_total\{direction="inbound"\} (\d+)$/m.exec(text)?.[1] ?? 0);
}

for (const side of ["outbound", "inbound"] as const)
  describe(`${side} listener`, () => {
    test("the rest of a small body is drained after the response; the next request is served on the same connection", async () => {
      const before = seen.length;
      // The head first; the body only once the answer is out; then a second request.
      const r = await exchangeWith(sides[side], `POST /first HTTP/1.1\r\n${H}Content-Length: 10\r\n\r\n`, {
        thenWrite: { afterMs: 300, bytes: `0123456789GET /second HTTP/1.1\r\n${H}\r\n` },
        quietMs: 600,
      });
      expect(r.error).toBeUndefined();
      expect(r.statuses).toEqual([200, 200]);
      expect(heads(r.text).some((h) => /connection: close/i.test(h))).toBe(false);
      expect(r.closed).toBe(false);
      expect(seen.slice(before)).toEqual(["POST /first", "GET /second"]);
    });

    test("a body too large to drain: the response says connection: close, and the connection ends", async () => {
      const r = await exchangeWith(sides[side], `POST /big HTTP/1.1\r\n${H}Content-Length: 10000000\r\n\r\n${"x".repeat(1000)}`, { quietMs: 600 });
      expect(r.statuses).toEqual([200]);
      expect(heads(r.text)[0]).toMatch(/connection: close/i);
      expect(r.closed).toBe(true);
    });
  });

test("sequential POSTs through the pair, answered before their bodies are read: none fails, and the pair keeps its connection", async () => {
  const before = await inboundConnections();
  const body = "y".repeat(100);
  const request = `POST /many HTTP/1.1\r\n${H}Content-Length: ${body.length}\r\n\r\n${body}`;
  const r = await exchangeWith(sides.outbound, request.repeat(200), { quietMs: 800, timeoutMs: 15_000 });
  expect(r.statuses.length).toBe(200);
  expect(r.statuses.every((s) => s === 200)).toBe(true);
  // Pooled: a connection or two, not one per few requests.
  expect((await inboundConnections()) - before).toBeLessThanOrEqual(2);
});
