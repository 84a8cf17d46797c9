/**
 * Resource limits on both listeners of real proxies (threats.md "Resource exhaustion"):
 * oversized header blocks and URLs are refused by Bun.serve before any handler runs
 * (Bun's limit is ~16 KiB for the request line and headers together, and ~200 header
 * lines; it answers 431 for a long URL too, never 414), and bodies over
 * `--max-body-size` get 413 without the service ever receiving a body it could take
 * for complete.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { clientTls, eventually, recordingService, rssMiB, type RecordingService } from "../helpers/data-plane.ts";
import { MeshFixture } from "../helpers/mesh-fixture.ts";
import { exchangeWith, type ClientTls, type RawOptions, type RawResult } from "../helpers/raw-http.ts";

const MAX_BODY = 4096;
const H = "Host: payments\r\n";

const fx = new MeshFixture();
let svc: RecordingService;
const procs: { orders: number; payments: number } = { orders: 0, payments: 0 };
const sides: Record<"outbound" | "inbound", { port: number; tls?: ClientTls; pid: () => number }> = {} as never;

beforeAll(async () => {
  await fx.init();
  await fx.issue("orders");
  await fx.issue("payments");
  svc = recordingService();
  const limit = ["--max-body-size", String(MAX_BODY)];
  const payments = await fx.proxy("payments", svc.url, undefined, limit);
  const orders = await fx.proxy("orders", fx.echo("orders").url, fx.config("orders", { payments: [payments.ports.inbound] }), limit);
  procs.orders = orders.proc.pid;
  procs.payments = payments.proc.pid;
  sides.outbound = { port: orders.ports.outbound, pid: () => procs.orders };
  sides.inbound = { port: payments.ports.inbound, tls: clientTls(fx, "orders"), pid: () => procs.payments };
});
afterAll(async () => {
  await fx.close();
  svc?.stop();
});

function send(side: "outbound" | "inbound", bytes: string, extra: Partial<RawOptions> = {}): Promise<RawResult> {
  return exchangeWith(sides[side], bytes, extra);
}

const many = (n: number, size = 1) => Array.from({ length: n }, (_, i) => `x-h${i}: ${"v".repeat(size)}\r\n`).join("");

for (const side of ["outbound", "inbound"] as const) {
  describe(`${side}: header and URL limits`, () => {
    for (const [name, bytes] of [
      ["one 64 KiB header", `GET /h HTTP/1.1\r\n${H}X-Big: ${"a".repeat(64 * 1024)}\r\n\r\n`],
      ["64 KiB over 64 headers of 1 KiB", `GET /h HTTP/1.1\r\n${H}${many(64, 1024)}\r\n`],
      ["10,000 tiny headers", `GET /h HTTP/1.1\r\n${H}${many(10_000)}\r\n`],
      ["250 tiny headers (over Bun's count limit, under its size limit)", `GET /h HTTP/1.1\r\n${H}${many(250)}\r\n`],
      ["a 1 MB URL", `GET /${"a".repeat(1 << 20)} HTTP/1.1\r\n${H}\r\n`],
      ["a 1 MB query string", `GET /h?q=${"a".repeat(1 << 20)} HTTP/1.1\r\n${H}\r\n`],
    ] as const) {
      test(`${name} → 431, connection closed, nothing forwarded`, async () => {
        const before = svc.hits;
        const r = await send(side, bytes);
        expect(r.statuses).toEqual([431]);
        expect(r.closed).toBe(true);
        await Bun.sleep(50);
        expect(svc.hits).toBe(before);
      });
    }

    test("under the limits, a 12 KiB header and 100 headers pass through both hops intact", async () => {
      const before = svc.seen.length;
      const big = "b".repeat(12 * 1024);
      const r = await send(side, `GET /ok HTTP/1.1\r\n${H}X-Big: ${big}\r\nConnection: close\r\n\r\n`);
      expect(r.statuses).toEqual([200]);
      const r2 = await send(side, `GET /ok HTTP/1.1\r\n${H}${many(100)}Connection: close\r\n\r\n`);
      expect(r2.statuses).toEqual([200]);
      const seen = svc.seen.slice(before);
      expect(seen.length).toBe(2);
      expect(seen[0]!.headers["x-big"]).toBe(big);
      expect(Object.keys(seen[1]!.headers).filter((k) => k.startsWith("x-h")).length).toBe(100);
    });

    test("a flood of 8 MB URLs is refused without the proxy buffering them", async () => {
      const rssBefore = rssMiB(sides[side].pid());
      const url = `GET /${"a".repeat(8 << 20)} HTTP/1.1\r\n${H}\r\n`;
      const results = await Promise.all(Array.from({ length: 64 }, () => send(side, url)));
      expect(results.map((r) => r.statuses[0] ?? (r.closed ? "closed" : "open"))).toEqual(Array(64).fill(431));
      // 512 MB of URLs were offered at once. Both listeners stop at the 16 KiB head limit
      // and refuse (measured growth: outbound 3-5 MB; inbound 22-34 MB, for 64 concurrent
      // TLS sessions and their handshakes).
      const grew = rssMiB(sides[side].pid()) - rssBefore;
      expect(grew).toBeLessThan(side === "outbound" ? 16 : 160);
    });
  });

  describe(`${side}: bodies over --max-body-size ${MAX_BODY}`, () => {
    test("a body of exactly the limit is forwarded whole", async () => {
      const before = svc.seen.length;
      const r = await send(side, `POST /b HTTP/1.1\r\n${H}Content-Length: ${MAX_BODY}\r\nConnection: close\r\n\r\n${"a".repeat(MAX_BODY)}`);
      expect(r.statuses).toEqual([200]);
      expect(svc.seen.slice(before).map((s) => [s.bytes, s.body])).toEqual([[MAX_BODY, "complete"]]);
    });

    test("Content-Length one over the limit → 413 before anything is forwarded", async () => {
      const before = svc.hits;
      const r = await send(side, `POST /b HTTP/1.1\r\n${H}Content-Length: ${MAX_BODY + 1}\r\n\r\n${"a".repeat(MAX_BODY + 1)}`);
      expect(r.statuses).toEqual([413]);
      expect(r.closed).toBe(true);
      await Bun.sleep(50);
      expect(svc.hits).toBe(before);
    });

    test("Content-Length of 10 GB (no body sent) → 413, nothing forwarded", async () => {
      const before = svc.hits;
      const r = await send(side, `POST /b HTTP/1.1\r\n${H}Content-Length: 10000000000\r\n\r\n`);
      expect(r.statuses).toEqual([413]);
      expect(r.closed).toBe(true);
      await Bun.sleep(50);
      expect(svc.hits).toBe(before);
    });

    for (const [name, first, later] of [
      ["a chunked body over the limit in one packet", `5dc\r\n${"a".repeat(1500)}\r\n`.repeat(4) + "0\r\n\r\n", undefined],
      ["a chunked body that crosses the limit after streaming started", `bb8\r\n${"a".repeat(3000)}\r\n`, `bb8\r\n${"a".repeat(3000)}\r\n0\r\n\r\n`],
    ] as const) {
      test(`${name} → 413; the service never receives it as complete`, async () => {
        const before = svc.seen.length;
        const r = await send(side, `POST /b HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n${first}`, later ? { thenWrite: { afterMs: 200, bytes: later } } : {});
        expect(r.statuses).toEqual([413]);
        expect(r.closed).toBe(true);
        // A chunked body's size is known only as it streams, so the request may have been
        // started upstream; then its body must have failed, never ended cleanly.
        expect(await eventually(() => svc.seen.slice(before).every((s) => s.body !== "pending"))).toBe(true);
        const seen = svc.seen.slice(before);
        expect(seen.filter((s) => s.body === "complete")).toEqual([]);
        expect(seen.every((s) => s.bytes <= MAX_BODY)).toBe(true);
      });
    }

    for (const [name, head, part] of [
      ["Content-Length body", `Content-Length: 3000\r\n\r\n`, "a".repeat(1000)],
      ["chunked body", `Transfer-Encoding: chunked\r\n\r\n`, `3e8\r\n${"a".repeat(1000)}\r\n`],
    ] as const) {
      test(`a client that dies mid-${name}: the service sees the body fail, not end`, async () => {
        const before = svc.seen.length;
        // Nothing more is sent; the client gives up and closes after 500 ms.
        const r = await send(side, `POST /b HTTP/1.1\r\n${H}${head}${part}`, { timeoutMs: 500 });
        expect(r.statuses).toEqual([]);
        expect(await eventually(() => svc.seen.length > before && svc.seen.slice(before).every((s) => s.body !== "pending"), 5000)).toBe(true);
        expect(svc.seen.slice(before).map((s) => [s.bytes, s.body.startsWith("error")])).toEqual([[1000, true]]);
      });
    }
  });
}

test("both proxies still serve after every limit was hit", async () => {
  for (const side of ["outbound", "inbound"] as const) {
    const r = await send(side, `GET /alive HTTP/1.1\r\n${H}Connection: close\r\n\r\n`);
    expect(r.statuses).toEqual([200]);
  }
});
