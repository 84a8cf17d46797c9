/**
 * A client that pipelines requests and stops reading. The proxy must not answer more of
 * them while the socket holds back part of a response (it would queue every response
 * in memory, without bound), and what it holds back must survive other connections'
 * responses being built meanwhile (heads are built in one shared buffer): once the
 * client reads again, every response arrives byte for byte.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import type { Socket } from "bun";
import { MeshFixture, type EchoService } from "../helpers/mesh-fixture.ts";
import { eventually } from "../helpers/wait.ts";

const fx = new MeshFixture();
const BODY = 8 * 1024;
/** 32 MiB of responses: far more than loopback socket buffers take from a client that does not read (~4 MiB here). */
const PIPELINED = 4000;
let service: EchoService;
let outbound = 0;

/** Response i's body: its number over and over, so a piece of another response shows. */
function bodyOf(i: number, size: number): string {
  const unit = `<${i}>`;
  return unit.repeat(Math.ceil(size / unit.length)).slice(0, size);
}

beforeAll(async () => {
  await fx.init();
  await fx.issue("orders");
  await fx.issue("payments");
  service = fx.service((req) => {
    const i = Number(new URL(req.url).pathname.slice(3));
    return new Response(bodyOf(i, BODY));
  });
  const payments = await fx.proxy("payments", service.url);
  const orders = await fx.proxy("orders", fx.echo("orders").url, fx.config("orders", { payments: [payments.ports.inbound] }));
  outbound = orders.ports.outbound;
});
afterAll(() => fx.close());

interface Reader {
  socket: Socket<undefined>;
  bytes: Buffer[];
  received: number;
}

/** Opens a connection that does not read, and writes `requests` into it (waiting for drains). */
async function pipelineWithoutReading(requests: string): Promise<Reader> {
  const out = Buffer.from(requests, "latin1");
  let at = 0;
  const reader = { bytes: [] as Buffer[], received: 0 } as Reader;
  const flush = (s: Socket<undefined>) => {
    while (at < out.length) {
      const n = s.write(out, at, out.length - at);
      if (n <= 0) return;
      at += n;
    }
  };
  reader.socket = await Bun.connect({
    hostname: "127.0.0.1",
    port: outbound,
    socket: {
      open: (s) => {
        s.pause();
        flush(s);
      },
      drain: flush,
      data: (_s, chunk) => {
        reader.bytes.push(Buffer.from(chunk));
        reader.received += chunk.byteLength;
      },
    },
  });
  return reader;
}

/** Splits `all` into content-length framed responses and returns their bodies. */
function bodies(all: Buffer): string[] {
  const out: string[] = [];
  let at = 0;
  while (at < all.length) {
    const end = all.indexOf("\r\n\r\n", at, "latin1");
    const head = all.toString("latin1", at, end);
    expect(head.startsWith("HTTP/1.1 200 ")).toBe(true);
    const length = Number(/content-length: (\d+)/i.exec(head)![1]);
    out.push(all.toString("latin1", end + 4, end + 4 + length));
    at = end + 4 + length;
  }
  return out;
}

async function settled(read: () => number): Promise<number> {
  let last = -1;
  for (let i = 0; i < 100; i++) {
    await Bun.sleep(50);
    const now = read();
    if (now === last) return now;
    last = now;
  }
  return last;
}

test("a client that pipelines and does not read: answered as far as the sockets take, every byte intact", async () => {
  const before = service.hits;
  let requests = "";
  for (let i = 0; i < PIPELINED; i++) requests += `GET /r/${i} HTTP/1.1\r\nHost: payments\r\n\r\n`;
  const slow = await pipelineWithoutReading(requests);
  // Settled only once the first request got through: on a loaded machine the count can sit at 0 for a while.
  const deadline = Date.now() + 10_000;
  while (service.hits === before && Date.now() < deadline) await Bun.sleep(10);
  const served = (await settled(() => service.hits)) - before;
  // What the socket buffers take, and one response more: not all of them.
  expect(served).toBeGreaterThan(0);
  expect(served).toBeLessThan(PIPELINED / 2);
  // Other connections' responses are built while the slow one's rest is held.
  for (let j = 0; j < 50; j++) expect(await (await fetch(`http://127.0.0.1:${outbound}/r/${100000 + j}`, { headers: { host: "payments" } })).text()).toBe(bodyOf(100000 + j, BODY));

  slow.socket.resume();
  await eventually(() => slow.received >= PIPELINED * BODY, 20_000);
  // Heads come on top of the bodies: read until nothing more arrives.
  await settled(() => slow.received);
  const got = bodies(Buffer.concat(slow.bytes));
  slow.socket.end();
  expect(got.length).toBe(PIPELINED);
  for (let i = 0; i < PIPELINED; i++) if (got[i] !== bodyOf(i, BODY)) throw new Error(`response ${i} differs from what the service sent`);
});
