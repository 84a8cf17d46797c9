/**
 * Bodies stream through the proxy pair with flat memory: 1 GiB up (client → outbound →
 * mTLS → inbound → service) and 1 GiB down, while both proxies' resident memory is
 * sampled from /proc. Buffering a whole body, or any large part of it, would show as
 * hundreds of MB; streaming costs a bounded amount whatever the size (measured on 2 vCPU:
 * +20 MB on the outbound proxy, +60-85 MB on the inbound one with its TLS bridge, the
 * same for 1 GiB and 4 GiB; each direction takes 2-3 s).
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { rssMiB } from "../helpers/data-plane.ts";
import { MeshFixture } from "../helpers/mesh-fixture.ts";

const GIB = 2 ** 30;
const CHUNK = new Uint8Array(64 * 1024).fill(0x61);
/** Growth over the idle baseline that fails the test: a fifth of the body. */
const MAX_GROWTH_MIB = 200;

/** `total` bytes as a stream of one reused 64 KiB chunk: no 1 GiB buffer anywhere. */
function bodyOf(total: number): ReadableStream<Uint8Array> {
  let sent = 0;
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      if (sent >= total) return controller.close();
      const n = Math.min(CHUNK.byteLength, total - sent);
      controller.enqueue(n === CHUNK.byteLength ? CHUNK : CHUNK.subarray(0, n));
      sent += n;
    },
  });
}

const fx = new MeshFixture();
let service: ReturnType<typeof Bun.serve>;
let received = { bytes: 0, complete: false };
let pids: { orders: number; payments: number };
let outbound = 0;

beforeAll(async () => {
  await fx.init();
  await fx.issue("orders");
  await fx.issue("payments");
  service = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    development: false,
    maxRequestBodySize: 4 * GIB,
    async fetch(req) {
      const url = new URL(req.url);
      if (url.pathname === "/down") {
        const size = Number(url.searchParams.get("bytes"));
        return new Response(bodyOf(size), { headers: { "content-length": String(size) } });
      }
      received = { bytes: 0, complete: false };
      for await (const chunk of req.body!) received.bytes += chunk.byteLength;
      received.complete = true;
      return new Response(String(received.bytes));
    },
  });
  const big = ["--max-body-size", String(4 * GIB)];
  const payments = await fx.proxy("payments", `http://127.0.0.1:${service.port}`, undefined, big);
  const orders = await fx.proxy("orders", fx.echo("orders").url, fx.config("orders", { payments: [payments.ports.inbound] }), big);
  pids = { orders: orders.proc.pid, payments: payments.proc.pid };
  outbound = orders.ports.outbound;
  // Warm the path (pool, TLS session, JIT) so the baseline is the proxies' working state.
  for (let i = 0; i < 3; i++) await (await fetch(`http://127.0.0.1:${outbound}/down?bytes=1000000`, { headers: { host: "payments" } })).arrayBuffer();
});
afterAll(async () => {
  await fx.close();
  service?.stop(true);
});

/** Samples both proxies' RSS every 25 ms while `work` runs; returns the growth over the start. */
async function peakGrowth(work: () => Promise<void>): Promise<{ orders: number; payments: number }> {
  const base = { orders: rssMiB(pids.orders), payments: rssMiB(pids.payments) };
  const peak = { ...base };
  const timer = setInterval(() => {
    peak.orders = Math.max(peak.orders, rssMiB(pids.orders));
    peak.payments = Math.max(peak.payments, rssMiB(pids.payments));
  }, 25);
  try {
    await work();
  } finally {
    clearInterval(timer);
  }
  return { orders: peak.orders - base.orders, payments: peak.payments - base.payments };
}

test("1 GiB request body streams through the pair with flat memory", async () => {
  let status = 0;
  let answer = "";
  const growth = await peakGrowth(async () => {
    const res = await fetch(`http://127.0.0.1:${outbound}/up`, {
      method: "POST",
      headers: { host: "payments" },
      body: bodyOf(GIB),
      // @ts-expect-error Bun's streaming request bodies need half duplex
      duplex: "half",
    });
    status = res.status;
    answer = await res.text();
  });
  console.log(`upload RSS growth, MiB: outbound proxy ${growth.orders.toFixed(0)}, inbound proxy ${growth.payments.toFixed(0)}`);
  expect(status).toBe(200);
  expect(answer).toBe(String(GIB));
  expect(received).toEqual({ bytes: GIB, complete: true });
  expect(growth.orders).toBeLessThan(MAX_GROWTH_MIB);
  expect(growth.payments).toBeLessThan(MAX_GROWTH_MIB);
}, 60_000);

test("1 GiB response body streams through the pair with flat memory", async () => {
  let status = 0;
  let bytes = 0;
  const growth = await peakGrowth(async () => {
    const res = await fetch(`http://127.0.0.1:${outbound}/down?bytes=${GIB}`, { headers: { host: "payments" } });
    status = res.status;
    for await (const chunk of res.body!) bytes += chunk.byteLength;
  });
  console.log(`download RSS growth, MiB: outbound proxy ${growth.orders.toFixed(0)}, inbound proxy ${growth.payments.toFixed(0)}`);
  expect(status).toBe(200);
  expect(bytes).toBe(GIB);
  expect(growth.orders).toBeLessThan(MAX_GROWTH_MIB);
  expect(growth.payments).toBeLessThan(MAX_GROWTH_MIB);
}, 60_000);
