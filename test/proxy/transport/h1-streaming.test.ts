/**
 * Large bodies through the HTTP/1.1 client: both directions stream with backpressure
 * (a reader that stops reading stops the sender), and 50 MB each way never sits in memory.
 */
import { afterEach, expect, test } from "bun:test";
import type { Socket } from "bun";
import { Http1Pool } from "../../../src/proxy/transport/h1/index.ts";

const MB = 1024 * 1024;
const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0).reverse()) c();
});

function newPool(port: number): Http1Pool {
  const pool = new Http1Pool({ host: "127.0.0.1", port, connectTimeoutMs: 2000, idleTimeoutMs: 5000 });
  cleanups.push(() => pool.close());
  return pool;
}

/** A body of `total` bytes made on demand (byte i = i mod 251), counting what was pulled. */
function generated(total: number, chunk = 64 * 1024): { stream: ReadableStream<Uint8Array>; pulled: () => number } {
  let made = 0;
  const stream = new ReadableStream<Uint8Array>({
    pull(c) {
      if (made >= total) return c.close();
      const n = Math.min(chunk, total - made);
      const buf = new Uint8Array(n);
      for (let i = 0; i < n; i++) buf[i] = (made + i) % 251;
      made += n;
      c.enqueue(buf);
    },
  });
  return { stream, pulled: () => made };
}

/** Reads a stream to the end, checking the i mod 251 pattern without keeping the bytes. */
async function drainChecked(stream: ReadableStream<Uint8Array>): Promise<number> {
  let seen = 0;
  for await (const chunk of stream) {
    for (let i = 0; i < chunk.length; i += 4093) if (chunk[i] !== (seen + i) % 251) throw new Error(`corrupt byte at ${seen + i}`);
    seen += chunk.length;
  }
  return seen;
}

async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error("condition not met in time");
    await Bun.sleep(5);
  }
}

test("a 50 MB response: a consumer that stops reading stops the server; then it all arrives intact", async () => {
  const total = 50 * MB;
  const body = new Uint8Array(total);
  for (let i = 0; i < total; i++) body[i] = i % 251;
  let written = 0;
  const pump = (s: Socket<undefined>) => {
    while (written < total) {
      const n = s.write(body.subarray(written, Math.min(total, written + MB)));
      if (n <= 0) return;
      written += n;
    }
  };
  const server = Bun.listen({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      data(s) {
        s.write(`HTTP/1.1 200 OK\r\ncontent-length: ${total}\r\n\r\n`);
        pump(s);
      },
      drain: pump,
    },
  });
  cleanups.push(() => server.stop(true));
  const pool = newPool(server.port);
  const res = await pool.send({ method: "GET", pathAndQuery: "/big", headers: new Headers(), body: null });
  const reader = res.body!.getReader();
  await reader.read();
  await Bun.sleep(300);
  const whilePaused = written;
  await Bun.sleep(200);
  // Only socket buffers and the client's small queue fill up; the server is stuck.
  expect(written).toBe(whilePaused);
  expect(whilePaused).toBeLessThan(16 * MB);
  reader.releaseLock();
  // The first chunk was taken above: count it in.
  const rest = await (async () => {
    let n = 0;
    for await (const c of res.body!) n += c.length;
    return n;
  })();
  expect(rest).toBeGreaterThan(total - MB);
  expect(written).toBe(total);
  await until(() => pool.stats.idle === 1);
});

test("a 50 MB request body: a server that stops reading stops the upload", async () => {
  const total = 50 * MB;
  let received = 0;
  let sock: Socket<undefined> | undefined;
  const server = Bun.listen({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      open(s) {
        sock = s;
        s.pause(); // read nothing for now
      },
      data(s, chunk) {
        received += chunk.length;
        // head + chunked framing overhead: reply once the 0-chunk terminator arrived
        if (chunk.toString("latin1").endsWith("\r\n0\r\n\r\n")) s.write(`HTTP/1.1 200 OK\r\ncontent-length: ${String(received).length}\r\n\r\n${received}`);
      },
    },
  });
  cleanups.push(() => server.stop(true));
  const pool = newPool(server.port);
  const src = generated(total);
  const res = pool.send({ method: "PUT", pathAndQuery: "/up", headers: new Headers(), body: src.stream });
  await Bun.sleep(300);
  const pulledWhilePaused = src.pulled();
  await Bun.sleep(200);
  expect(src.pulled()).toBe(pulledWhilePaused);
  expect(pulledWhilePaused).toBeLessThan(16 * MB);
  sock!.resume();
  const r = await res;
  expect(Number(await r.text())).toBeGreaterThan(total);
  expect(src.pulled()).toBe(total);
});

test("200 MB up and 200 MB down through an echo server, twice, intact, with bounded memory", async () => {
  // Large enough that GC slack (~30-40 MB measured) cannot pass for buffering a body.
  const total = 200 * MB;
  const server = Bun.serve({ hostname: "127.0.0.1", port: 0, maxRequestBodySize: 2 * total, fetch: (req) => new Response(req.body) });
  cleanups.push(() => server.stop(true));
  const pool = newPool(server.port!);
  Bun.gc(true);
  const before = process.memoryUsage().rss;
  let peak = before;
  const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 10);
  try {
    for (const known of [false, true]) {
      const src = generated(total);
      const headers = new Headers(known ? { "content-length": String(total) } : {});
      const res = await pool.send({ method: "POST", pathAndQuery: "/echo", headers, body: src.stream });
      expect(res.status).toBe(200);
      expect(await drainChecked(res.body!)).toBe(total);
    }
  } finally {
    clearInterval(sampler);
  }
  // A client that buffered a body would hold at least 200 MB.
  expect(peak - before).toBeLessThan(100 * MB);
  expect(pool.stats.created).toBe(1);
});
