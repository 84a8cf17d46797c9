/**
 * mesh-mux/1 end to end: two real `mesh proxy` processes (the caller's outbound and the
 * service's inbound) on loopback. Concurrent requests share one mTLS connection by
 * default and get one each with `multiplex: false`; more than 128 in flight open a
 * second session; large bodies cross intact; a slow reader holds the pair back
 * instead of making it buffer; a peer that does not choose mesh-mux/1 is spoken to in
 * plain HTTP/1.1; a draining inbound's refused streams go elsewhere.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import type { Socket, TCPSocketListener } from "bun";
import { clientTls, rssMiB } from "../../helpers/data-plane.ts";
import { MeshFixture, metricValue } from "../../helpers/mesh-fixture.ts";
import { alpn, dataFrame, frameHeader, MAX_PAYLOAD, muxServer, RESET_REFUSED, T, type MuxServer, type MuxServerConn } from "../../helpers/mux-peer.ts";

const TD = "mesh.local";
const ORDERS = `spiffe://${TD}/ns/default/sa/orders`;
const INVENTORY = `spiffe://${TD}/ns/default/sa/inventory`;
const MB = 1024 * 1024;

/** `n` bytes that differ by position and seed. */
function pattern(n: number, seed = 1): Buffer<ArrayBuffer> {
  const b = Buffer.from(new ArrayBuffer(n));
  let x = (seed * 2654435761) >>> 0 || 1;
  const whole = n - (n % 4);
  for (let i = 0; i < whole; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    b.writeUInt32LE(x, i);
  }
  for (let i = whole; i < n; i++) b[i] = i & 0xff;
  return b;
}
const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

const fx = new MeshFixture();
let svc: ReturnType<typeof Bun.serve>;
let payments: Awaited<ReturnType<MeshFixture["proxy"]>>;
const big = new Map<string, Buffer<ArrayBuffer>>();
/** Bytes the service has handed to the stream of /stream responses, by key. */
const streamed = new Map<string, number>();

/** Requests held until `n` with the same key are in, so they are provably in flight at once. */
const barriers = new Map<string, { arrived: number; release: () => void; released: Promise<void> }>();
function barrier(key: string, n: number): Promise<number> {
  let b = barriers.get(key);
  if (!b) {
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    b = { arrived: 0, release, released };
    barriers.set(key, b);
  }
  const entry = b;
  entry.arrived++;
  if (entry.arrived >= n) entry.release();
  return Promise.race([entry.released, Bun.sleep(15_000)]).then(() => entry.arrived);
}

function bodyOf(key: string, total: number): ReadableStream<Uint8Array> {
  const chunk = new Uint8Array(64 * 1024).fill(0x61);
  let sent = 0;
  streamed.set(key, 0);
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      if (sent >= total) return controller.close();
      const n = Math.min(chunk.byteLength, total - sent);
      controller.enqueue(n === chunk.byteLength ? chunk : chunk.subarray(0, n));
      sent += n;
      streamed.set(key, sent);
    },
  });
}

async function handle(req: Request): Promise<Response> {
  const url = new URL(req.url);
  const q = url.searchParams;
  const caller = req.headers.get("x-mesh-client-id");
  switch (url.pathname) {
    case "/hold": {
      const arrived = await barrier(q.get("key")!, Number(q.get("n")));
      return Response.json({ arrived, caller, i: q.get("i") });
    }
    case "/big": {
      const n = Number(q.get("bytes"));
      const seed = Number(q.get("seed") ?? 1);
      const k = `${n}/${seed}`;
      if (!big.has(k)) big.set(k, pattern(n, seed));
      return new Response(big.get(k)!, { headers: { "content-length": String(n) } });
    }
    case "/stream": {
      const n = Number(q.get("bytes"));
      return new Response(bodyOf(q.get("key")!, n), { headers: { "content-length": String(n) } });
    }
    case "/upload": {
      const h = createHash("sha256");
      let bytes = 0;
      for await (const chunk of req.body!) {
        h.update(chunk);
        bytes += chunk.byteLength;
      }
      return Response.json({ bytes, sha256: h.digest("hex") });
    }
    case "/slow":
      await Bun.sleep(Number(q.get("ms") ?? 500));
      return new Response(`slow ${q.get("i") ?? ""}`);
    default:
      return Response.json({ path: url.pathname, caller, i: q.get("i") });
  }
}

beforeAll(async () => {
  await fx.init(TD);
  await fx.issue("orders");
  await fx.issue("payments");
  await fx.issue("inventory");
  svc = Bun.serve({ hostname: "127.0.0.1", port: 0, development: false, maxRequestBodySize: 1 << 30, idleTimeout: 60, fetch: handle });
  payments = await fx.proxy("payments", svcUrl());
});
afterAll(async () => {
  await fx.close();
  svc.stop(true);
  // bun test runs every file in one process: leave no large buffers behind for the tests that measure its memory.
  big.clear();
  Bun.gc(true);
});
const svcUrl = () => `http://127.0.0.1:${svc.port}`;

const NO_MUX = `---
apiVersion: mesh.dev/v1alpha1
kind: DestinationPolicy
metadata:
  name: payments
spec:
  multiplex: false
`;

let configs = 0;
/** A fresh caller proxy (its own pool, so its own sessions) for payments at `ports`. */
function caller(ports: number[] = [payments.ports.inbound], extra = "", service = "orders") {
  return fx.proxy(service, fx.echo(service).url, fx.config(`${service}-${++configs}`, { payments: ports }, extra));
}

const inboundConns = (admin = payments.ports.admin) => metricValue(admin, "mesh_connections_total", { direction: "inbound" });

async function call(outbound: number, path: string, init: RequestInit = {}): Promise<{ status: number; body: string; error?: string; meshError?: string | null }> {
  try {
    const res = await fetch(`http://127.0.0.1:${outbound}${path}`, { ...init, headers: { host: "payments", ...(init.headers as Record<string, string> | undefined) } });
    return { status: res.status, body: await res.text(), meshError: res.headers.get("x-mesh-error") };
  } catch (err) {
    return { status: 0, body: "", error: String(err) };
  }
}

// ---- 8. sessions ----

describe("concurrent requests share sessions", () => {
  test("40 concurrent requests through the pair use one inbound TLS connection (multiplex by default)", async () => {
    const orders = await caller();
    const before = await inboundConns();
    const results = await Promise.all(Array.from({ length: 40 }, (_, i) => call(orders.ports.outbound, `/hold?key=mux40&n=40&i=${i}`)));
    expect(results.filter((r) => r.status !== 200)).toEqual([]);
    // The service held every one until all 40 were in: they were in flight at once.
    expect(results.map((r) => JSON.parse(r.body).arrived)).toEqual(Array(40).fill(40));
    expect(results.every((r) => JSON.parse(r.body).caller === ORDERS)).toBe(true);
    expect((await inboundConns()) - before).toBe(1);
    // And a second wave reuses it.
    const again = await Promise.all(Array.from({ length: 40 }, (_, i) => call(orders.ports.outbound, `/hold?key=mux40b&n=40&i=${i}`)));
    expect(again.filter((r) => r.status !== 200)).toEqual([]);
    expect((await inboundConns()) - before).toBe(1);
    orders.proc.kill("SIGKILL");
  });

  test("with `multiplex: false` for payments, 40 concurrent requests take more than one (at least 40) inbound connections", async () => {
    const orders = await caller([payments.ports.inbound], NO_MUX);
    const before = await inboundConns();
    const results = await Promise.all(Array.from({ length: 40 }, (_, i) => call(orders.ports.outbound, `/hold?key=plain40&n=40&i=${i}`)));
    expect(results.filter((r) => r.status !== 200)).toEqual([]);
    expect(results.map((r) => JSON.parse(r.body).arrived)).toEqual(Array(40).fill(40));
    const opened = (await inboundConns()) - before;
    expect(opened).toBeGreaterThan(1);
    expect(opened).toBeGreaterThanOrEqual(40);
    orders.proc.kill("SIGKILL");
  });

  test("200 concurrent requests (more than 128 streams) all succeed: a second session opens", async () => {
    const orders = await caller();
    const before = await inboundConns();
    const results = await Promise.all(Array.from({ length: 200 }, (_, i) => call(orders.ports.outbound, `/hold?key=mux200&n=200&i=${i}`)));
    const failed = results.filter((r) => r.status !== 200);
    expect(failed.slice(0, 5)).toEqual([]);
    expect(failed.length).toBe(0);
    expect(results.map((r) => JSON.parse(r.body).arrived)).toEqual(Array(200).fill(200));
    const opened = (await inboundConns()) - before;
    // 200 streams in flight at once need two sessions of at most 128; a few more would be waste, not failure.
    expect(opened).toBeGreaterThanOrEqual(2);
    expect(opened).toBeLessThanOrEqual(4);
    orders.proc.kill("SIGKILL");
  }, 40_000);

  test("two callers' requests, concurrent over their own sessions, each reach the service with the caller's identity", async () => {
    const [orders, inventory] = await Promise.all([caller(), caller([payments.ports.inbound], "", "inventory")]);
    const results = await Promise.all(
      Array.from({ length: 60 }, (_, i) => {
        const who = i % 2 === 0 ? orders : inventory;
        return call(who.ports.outbound, `/hold?key=ids&n=60&i=${i}`).then((r) => ({ i, ...r }));
      }),
    );
    for (const r of results) {
      expect(r.status).toBe(200);
      const body = JSON.parse(r.body);
      expect(body.arrived).toBe(60);
      expect(body.caller).toBe(r.i % 2 === 0 ? ORDERS : INVENTORY);
      expect(body.i).toBe(String(r.i));
    }
    orders.proc.kill("SIGKILL");
    inventory.proc.kill("SIGKILL");
  });
});

// ---- 8. bodies ----

describe("bodies", () => {
  let outbound = 0;
  let pids: { orders: number; payments: number };
  beforeAll(async () => {
    const orders = await caller();
    outbound = orders.ports.outbound;
    pids = { orders: orders.proc.pid, payments: payments.proc.pid };
  });

  test("20 MB up and 20 MB down at once, with small requests beside them, cross intact (sha-256)", async () => {
    const upBody = pattern(20 * MB, 11);
    const down = fetch(`http://127.0.0.1:${outbound}/big?bytes=${20 * MB}&seed=12`, { headers: { host: "payments" } }).then(async (r) => ({
      status: r.status,
      body: Buffer.from(await r.arrayBuffer()),
    }));
    const up = call(outbound, "/upload", { method: "POST", body: upBody });
    const small = Promise.all(Array.from({ length: 20 }, (_, i) => call(outbound, `/echo?i=${i}`)));
    const [d, u, s] = await Promise.all([down, up, small]);
    expect(d.status).toBe(200);
    expect(d.body.byteLength).toBe(20 * MB);
    expect(sha(d.body)).toBe(sha(pattern(20 * MB, 12)));
    expect(u.status).toBe(200);
    expect(JSON.parse(u.body)).toEqual({ bytes: 20 * MB, sha256: sha(upBody) });
    expect(s.map((r) => r.status)).toEqual(Array(20).fill(200));
    expect(s.map((r) => JSON.parse(r.body).i)).toEqual(Array.from({ length: 20 }, (_, i) => String(i)));
  }, 40_000);

  test("five 4 MB downloads in parallel on one session each arrive intact", async () => {
    const results = await Promise.all(
      [21, 22, 23, 24, 25].map((seed) =>
        fetch(`http://127.0.0.1:${outbound}/big?bytes=${4 * MB + seed}&seed=${seed}`, { headers: { host: "payments" } }).then(async (r) => ({ seed, status: r.status, body: Buffer.from(await r.arrayBuffer()) })),
      ),
    );
    for (const r of results) {
      expect(r.status).toBe(200);
      expect(r.body.byteLength).toBe(4 * MB + r.seed);
      expect(sha(r.body)).toBe(sha(pattern(4 * MB + r.seed, r.seed)));
    }
  }, 30_000);

  test("a client that does not read a 256 MB response holds the pair back: bounded memory, then all of it arrives", async () => {
    const total = 256 * MB;
    const base = { orders: rssMiB(pids.orders), payments: rssMiB(pids.payments) };
    const peak = { ...base };
    const sample = setInterval(() => {
      peak.orders = Math.max(peak.orders, rssMiB(pids.orders));
      peak.payments = Math.max(peak.payments, rssMiB(pids.payments));
    }, 20);
    const state = { bytes: 0, closed: false, head: "", body: new BodyCounter() };
    let sock: Socket<typeof state> | undefined;
    try {
      sock = await Bun.connect<typeof state>({
        hostname: "127.0.0.1",
        port: outbound,
        data: state,
        socket: {
          data(s, chunk) {
            s.data.bytes += chunk.byteLength;
            s.data.body.feed(chunk);
          },
          close(s) {
            s.data.closed = true;
          },
          error(s) {
            s.data.closed = true;
          },
        },
      });
      sock.write(`GET /stream?key=slow&bytes=${total} HTTP/1.1\r\nhost: payments\r\n\r\n`);
      // Read the head and a little, then stop reading for a while.
      const t0 = Date.now();
      while (state.bytes === 0 && Date.now() - t0 < 5000) await Bun.sleep(5);
      sock.pause();
      const stalledAt = Date.now();
      await Bun.sleep(2500);
      const produced = streamed.get("slow") ?? 0;
      const growth = { orders: peak.orders - base.orders, payments: peak.payments - base.payments };
      console.log(
        `slow reader: service produced ${(produced / MB).toFixed(1)} MiB of ${total / MB} in ${Date.now() - stalledAt} ms; client read ${(state.bytes / MB).toFixed(1)} MiB; RSS growth MiB: outbound ${growth.orders.toFixed(0)}, inbound ${growth.payments.toFixed(0)}`,
      );
      expect(state.bytes).toBeGreaterThan(0);
      // Nowhere near the whole body was pulled from the service while the client did not read.
      expect(produced).toBeLessThan(total / 4);
      expect(growth.orders).toBeLessThan(100);
      expect(growth.payments).toBeLessThan(100);
      // Then it reads, and everything arrives.
      sock.resume();
      const until = Date.now() + 30_000;
      while (!state.body.done && !state.body.broken && !state.closed && Date.now() < until) await Bun.sleep(20);
      expect(state.body.status).toBe(200);
      expect(state.body.broken).toBe(false);
      expect(state.body.done).toBe(true);
      expect(state.body.bodyBytes).toBe(total);
      expect(streamed.get("slow")).toBe(total);
    } finally {
      clearInterval(sample);
      sock?.terminate();
    }
  }, 45_000);

  test("a service that does not read a 256 MB upload holds the sender back through the pair: bounded memory, then all of it arrives", async () => {
    // The service: raw TCP, so nothing reads the body until it says so.
    const total = 256 * MB;
    const up = { head: "", body: 0, reading: false, answered: false };
    const service = Bun.listen<undefined>({
      hostname: "127.0.0.1",
      port: 0,
      socket: {
        data(s, chunk) {
          let rest = chunk;
          if (!up.head.includes("\r\n\r\n")) {
            up.head += chunk.toString("latin1");
            const end = up.head.indexOf("\r\n\r\n");
            if (end < 0) return;
            rest = chunk.subarray(chunk.byteLength - (up.head.length - end - 4));
            // Read nothing more for a while.
            s.pause();
            setTimeout(() => {
              up.reading = true;
              s.resume();
            }, 2500);
          }
          up.body += rest.byteLength;
          if (up.body >= total && !up.answered) {
            up.answered = true;
            s.write(`HTTP/1.1 200 OK\r\ncontent-length: ${String(up.body).length}\r\n\r\n${up.body}`);
          }
        },
      },
    });
    const inbound = await fx.proxy("payments", `http://127.0.0.1:${service.port}`);
    const orders = await caller([inbound.ports.inbound]);
    const ids = { orders: orders.proc.pid, payments: inbound.proc.pid };
    const base = { orders: rssMiB(ids.orders), payments: rssMiB(ids.payments) };
    const peak = { ...base };
    const sample = setInterval(() => {
      peak.orders = Math.max(peak.orders, rssMiB(ids.orders));
      peak.payments = Math.max(peak.payments, rssMiB(ids.payments));
    }, 20);
    const client = { reply: "", closed: false };
    let sock: Socket<typeof client> | undefined;
    try {
      sock = await Bun.connect<typeof client>({
        hostname: "127.0.0.1",
        port: orders.ports.outbound,
        data: client,
        socket: {
          data(s, chunk) {
            s.data.reply += chunk.toString("latin1");
          },
          close(s) {
            s.data.closed = true;
          },
        },
      });
      sock.write(`POST /up HTTP/1.1\r\nhost: payments\r\ncontent-length: ${total}\r\n\r\n`);
      const chunk = new Uint8Array(256 * 1024).fill(0x62);
      let taken = 0;
      let takenWhileStalled = 0;
      const until = Date.now() + 30_000;
      while (taken < total && !client.closed && Date.now() < until) {
        const n = sock.write(chunk.subarray(0, Math.min(chunk.byteLength, total - taken)));
        if (n < 0) break;
        taken += n;
        if (!up.reading) takenWhileStalled = taken;
        if (n < chunk.byteLength) await Bun.sleep(up.reading ? 1 : 20);
      }
      while (!client.reply.includes("\r\n\r\n") && !client.closed && Date.now() < until) await Bun.sleep(20);
      await Bun.sleep(50);
      clearInterval(sample);
      const growth = { orders: peak.orders - base.orders, payments: peak.payments - base.payments };
      console.log(
        `stalled service: ${(takenWhileStalled / MB).toFixed(1)} MiB of ${total / MB} accepted from the client while the service read nothing; RSS growth MiB: outbound ${growth.orders.toFixed(0)}, inbound ${growth.payments.toFixed(0)}`,
      );
      expect(taken).toBe(total);
      expect(client.reply).toStartWith("HTTP/1.1 200");
      expect(client.reply.endsWith(`\r\n\r\n${total}`)).toBe(true);
      expect(up.body).toBe(total);
      // While the service read nothing, the pair took only what socket buffers and stream windows hold.
      expect(takenWhileStalled).toBeLessThan(total / 4);
      expect(growth.orders).toBeLessThan(100);
      expect(growth.payments).toBeLessThan(100);
    } finally {
      clearInterval(sample);
      sock?.terminate();
      orders.proc.kill("SIGKILL");
      inbound.proc.kill("SIGKILL");
      service.stop(true);
    }
  }, 45_000);
});

/** Counts an HTTP/1.1 response's body bytes as they arrive (content-length or chunked). */
class BodyCounter {
  status = 0;
  bodyBytes = 0;
  done = false;
  broken = false;
  private head = "";
  private inHead = true;
  private chunked = false;
  private length = 0;
  /** Chunked: "size" line, "data" bytes left, "crlf" after data, "trailer". */
  private phase: "size" | "data" | "crlf" | "trailer" = "size";
  private line = "";
  private left = 0;

  feed(chunk: Buffer): void {
    let at = 0;
    if (this.inHead) {
      this.head += chunk.toString("latin1");
      const end = this.head.indexOf("\r\n\r\n");
      if (end < 0) return;
      const head = this.head.slice(0, end).toLowerCase();
      this.status = Number(head.slice(9, 12));
      this.chunked = /\r\ntransfer-encoding: *chunked/.test(head);
      this.length = Number(/\r\ncontent-length: *(\d+)/.exec(head)?.[1] ?? 0);
      at = chunk.byteLength - (this.head.length - end - 4);
      this.inHead = false;
    }
    if (!this.chunked) {
      this.bodyBytes += chunk.byteLength - at;
      this.done = this.bodyBytes >= this.length;
      return;
    }
    for (let guard = 0; at < chunk.byteLength && guard < 1_000_000 && !this.done && !this.broken; guard++) {
      if (this.phase === "data") {
        const n = Math.min(this.left, chunk.byteLength - at);
        this.bodyBytes += n;
        this.left -= n;
        at += n;
        if (this.left === 0) this.phase = "crlf";
        continue;
      }
      const c = String.fromCharCode(chunk[at++]!);
      this.line += c;
      if (!this.line.endsWith("\r\n")) {
        if (this.line.length > 100) this.broken = true;
        continue;
      }
      const line = this.line.slice(0, -2);
      this.line = "";
      if (this.phase === "crlf") {
        if (line !== "") this.broken = true;
        this.phase = "size";
      } else if (this.phase === "size") {
        const size = parseInt(line, 16);
        if (!Number.isFinite(size)) this.broken = true;
        else if (size === 0) this.phase = "trailer";
        else {
          this.left = size;
          this.phase = "data";
        }
      } else if (line === "") this.done = true;
    }
  }
}

// ---- 9. fallback to plain HTTP/1.1 ----

interface PlainServer {
  listener: TCPSocketListener<PlainConn>;
  port: number;
  /** What each TLS connection's handshake chose, and the first bytes it carried. */
  conns: { alpn: string | false | null; first: string; peer: string | undefined }[];
  requests: number;
}
interface PlainConn {
  info: PlainServer["conns"][number];
  buf: string;
}

/** TLS of a test server posing as payments: its certificate from the fixture's CA, client certificates required. */
function paymentsServerTls(alpnProtocols?: Buffer) {
  return {
    ...clientTls(fx, "payments"),
    requestCert: true,
    rejectUnauthorized: true,
    ...(alpnProtocols ? { ALPNProtocols: alpnProtocols } : {}),
  };
}

/**
 * A minimal mTLS HTTP/1.1 server that is not a mesh proxy: payments' SPIFFE certificate
 * from the fixture's CA, client certificates required, no mesh-mux/1 (ALPN as given).
 */
function plainServer(alpnProtocols?: Buffer): PlainServer {
  const srv: PlainServer = { listener: undefined as never, port: 0, conns: [], requests: 0 };
  srv.listener = Bun.listen<PlainConn>({
    hostname: "127.0.0.1",
    port: 0,
    tls: paymentsServerTls(alpnProtocols),
    socket: {
      open(s) {
        s.data = { info: { alpn: null, first: "", peer: undefined }, buf: "" };
        srv.conns.push(s.data.info);
      },
      handshake(s) {
        s.data.info.alpn = s.alpnProtocol;
        s.data.info.peer = /URI:([^,\s]+)/.exec(s.getPeerX509Certificate()?.subjectAltName ?? "")?.[1];
      },
      data(s, chunk) {
        const text = chunk.toString("latin1");
        if (s.data.info.first === "") s.data.info.first = text.slice(0, 16);
        s.data.buf += text;
        for (let guard = 0; guard < 100; guard++) {
          const end = s.data.buf.indexOf("\r\n\r\n");
          if (end < 0) break;
          const head = s.data.buf.slice(0, end);
          s.data.buf = s.data.buf.slice(end + 4);
          const path = head.split(" ")[1];
          srv.requests++;
          const body = JSON.stringify({ plain: true, alpn: s.data.info.alpn || null, path });
          s.write(`HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
        }
      },
    },
  });
  srv.port = srv.listener.port;
  return srv;
}

describe("a peer that does not choose mesh-mux/1", () => {
  const servers: PlainServer[] = [];
  afterAll(() => {
    for (const s of servers) s.listener.stop(true);
  });

  for (const [name, offer] of [
    ["without ALPN", undefined],
    ["choosing http/1.1", alpn("http/1.1")],
  ] as const) {
    test(`an mTLS endpoint ${name} is served in plain HTTP/1.1`, async () => {
      const srv = plainServer(offer);
      servers.push(srv);
      const orders = await caller([srv.port]);
      const one = await call(orders.ports.outbound, "/first");
      expect(one.status).toBe(200);
      expect(JSON.parse(one.body)).toMatchObject({ plain: true, path: "/first" });
      expect(JSON.parse(one.body).alpn).not.toBe("mesh-mux/1");
      const many = await Promise.all(Array.from({ length: 10 }, (_, i) => call(orders.ports.outbound, `/p${i}`)));
      expect(many.map((r) => r.status)).toEqual(Array(10).fill(200));
      expect(many.map((r) => JSON.parse(r.body).path)).toEqual(Array.from({ length: 10 }, (_, i) => `/p${i}`));
      expect(srv.requests).toBe(11);
      // Every connection was the caller, and none chose mesh-mux/1; those that carried bytes carried HTTP/1.1.
      expect(srv.conns.length).toBeGreaterThan(0);
      for (const c of srv.conns) {
        expect(c.peer).toBe(ORDERS);
        expect(c.alpn === "mesh-mux/1").toBe(false);
        if (c.first !== "") expect(c.first).toMatch(/^GET \//);
      }
      // The caller did ask (its probe connection carried no request): the server chose http/1.1, or nothing.
      expect(srv.conns.some((c) => (offer ? c.alpn === "http/1.1" : !c.alpn))).toBe(true);
      orders.proc.kill("SIGKILL");
    });
  }
});

// ---- the caller's side of the protocol, against a hand-built mux server ----

/** A connection to the fake; each of its streams keeps the request bytes not yet answered. */
type FakeConn = MuxServerConn<Buffer>;

interface FakeMux extends MuxServer<Buffer> {
  /** Streams refused, as "conn:id". */
  refused: string[];
  /** Requests answered, as "conn:id METHOD path body". */
  served: string[];
}

interface FakeBehaviour {
  /** RESET(refused) for this stream of this connection (default never). */
  refuse?(conn: FakeConn, id: number): boolean;
  /** Called after a response went out; may send more frames. */
  afterResponse?(conn: FakeConn, id: number): void;
  /** Instead of a response: bytes to send (a protocol violation, say). */
  instead?(conn: FakeConn, id: number): Buffer | undefined;
}

/** A mesh-mux/1 server written from the protocol description alone, presenting payments' identity. */
function fakeMux(behave: FakeBehaviour = {}): FakeMux {
  const refused: string[] = [];
  const served: string[] = [];
  const respond = (c: FakeConn, id: number, req: Buffer) => {
    const text = req.toString("latin1");
    const end = text.indexOf("\r\n\r\n");
    const [method, path] = text.slice(0, text.indexOf("\r\n")).split(" ");
    const body = text.slice(end + 4);
    served.push(`${c.index}:${id} ${method} ${path} ${body}`);
    const out = JSON.stringify({ conn: c.index, stream: id, method, path, body });
    const res = Buffer.from(`HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(out)}\r\n\r\n${out}`, "latin1");
    const bad = behave.instead?.(c, id);
    c.sock.write(bad ?? dataFrame(id, res));
    if (!bad) behave.afterResponse?.(c, id);
  };
  const server = muxServer<Buffer>(paymentsServerTls(alpn("mesh-mux/1")), {
    open(c, id) {
      if (!behave.refuse?.(c, id)) return Buffer.alloc(0);
      refused.push(`${c.index}:${id}`);
      c.sock.write(frameHeader(T.RESET, id, RESET_REFUSED));
      return undefined;
    },
    data(c, id, held, payload) {
      const req = Buffer.concat([held, payload]);
      c.streams.set(id, req);
      c.sock.write(frameHeader(T.WINDOW, id, payload.byteLength));
      const head = req.indexOf("\r\n\r\n");
      if (head >= 0) {
        const len = Number(/\r\ncontent-length: *(\d+)/i.exec(req.toString("latin1", 0, head))?.[1] ?? 0);
        if (req.byteLength >= head + 4 + len) {
          c.streams.set(id, req.subarray(head + 4 + len));
          respond(c, id, req.subarray(0, head + 4 + len));
        }
      }
    },
  });
  return { ...server, refused, served };
}

describe("the caller against a hand-built mux server", () => {
  const fakes: FakeMux[] = [];
  afterAll(() => {
    for (const f of fakes) f.listener.stop(true);
  });
  const start = (b: FakeBehaviour) => {
    const f = fakeMux(b);
    fakes.push(f);
    return f;
  };

  test("control: requests ride streams of one session (the first is stream 1), and their responses come back", async () => {
    const fake = start({});
    const orders = await caller([fake.port]);
    for (let i = 0; i < 3; i++) {
      const r = await call(orders.ports.outbound, `/c${i}`, { method: "POST", body: `b${i}` });
      expect(r.status).toBe(200);
      expect(JSON.parse(r.body)).toMatchObject({ conn: 0, method: "POST", path: `/c${i}`, body: `b${i}` });
      if (i === 0) expect(JSON.parse(r.body).stream).toBe(1);
    }
    // Concurrent ones take further streams of the same session.
    const many = await Promise.all(Array.from({ length: 5 }, (_, i) => call(orders.ports.outbound, `/m${i}`)));
    expect(many.map((r) => r.status)).toEqual(Array(5).fill(200));
    expect(many.every((r) => JSON.parse(r.body).conn === 0)).toBe(true);
    expect(fake.conns.length).toBe(1);
    orders.proc.kill("SIGKILL");
  });

  test("control: a GET whose stream is refused with RESET 1 is sent again: the caller sees only the answer", async () => {
    const fake = start({ refuse: (c, id) => c.index === 0 && id === 1 });
    const orders = await caller([fake.port]);
    const r = await call(orders.ports.outbound, "/look");
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body)).toMatchObject({ method: "GET", path: "/look" });
    expect(fake.refused).toEqual(["0:1"]);
    orders.proc.kill("SIGKILL");
  });

  test("a POST whose body went into a stream the server refused is not sent again (that copy of the body is gone): a 502, and the service never sees it", async () => {
    const fake = start({ refuse: (c, id) => c.index === 0 && id === 1 });
    const orders = await caller([fake.port]);
    const r = await call(orders.ports.outbound, "/pay", { method: "POST", body: "amount=5" });
    expect(r.status).toBe(502);
    expect(fake.refused).toEqual(["0:1"]);
    expect(fake.served.length).toBe(0);
    // The next request is served normally.
    const next = await call(orders.ports.outbound, "/pay", { method: "POST", body: "amount=6" });
    expect(next.status).toBe(200);
    expect(JSON.parse(next.body)).toMatchObject({ method: "POST", path: "/pay", body: "amount=6" });
    orders.proc.kill("SIGKILL");
  });

  test("a bodiless POST whose stream got part of a response head and then RESET 1 is not sent again: a server that began to answer did process it", async () => {
    const fake = start({ instead: (c, id) => (c.index === 0 && id === 1 ? Buffer.concat([dataFrame(id, "HTTP/1.1 200 OK\r\ncontent-"), frameHeader(T.RESET, id, RESET_REFUSED)]) : undefined) });
    const orders = await caller([fake.port]);
    const r = await call(orders.ports.outbound, "/half", { method: "POST" });
    expect(r.status).toBe(502);
    expect(r.meshError).toBe("upstream-reset");
    expect(fake.served).toEqual(["0:1 POST /half "]);
    orders.proc.kill("SIGKILL");
  });

  test("after GOAWAY, new requests go on a new session", async () => {
    const fake = start({
      afterResponse: (c, id) => {
        // The first connection takes one request, then says it takes no more, and ends the stream.
        if (c.index !== 0) return;
        c.sock.write(Buffer.concat([frameHeader(T.GOAWAY, 0, id), frameHeader(T.FIN, id, 0)]));
      },
    });
    const orders = await caller([fake.port]);
    const first = await call(orders.ports.outbound, "/one");
    expect(first.status).toBe(200);
    expect(JSON.parse(first.body).conn).toBe(0);
    await Bun.sleep(100);
    const second = await call(orders.ports.outbound, "/two", { method: "POST", body: "x" });
    expect(second.status).toBe(200);
    expect(JSON.parse(second.body).conn).toBe(1);
    expect(fake.served.filter((l) => l.startsWith("0:")).length).toBe(1);
    orders.proc.kill("SIGKILL");
  });

  for (const [name, bad] of [
    ["a frame with nonzero flags", (id: number) => frameHeader(T.DATA, id, 1, 0x40)],
    ["an unknown frame type", (id: number) => frameHeader(9, id, 0)],
    ["GOAWAY on a stream", (id: number) => frameHeader(T.GOAWAY, id, 0)],
    ["a WINDOW of 0", (id: number) => frameHeader(T.WINDOW, id, 0)],
    ["DATA of 65537 bytes", (id: number) => Buffer.concat([frameHeader(T.DATA, id, MAX_PAYLOAD + 1), Buffer.alloc(MAX_PAYLOAD + 1, 0x41)])],
    ["a frame on stream 0", () => frameHeader(T.FIN, 0, 0)],
  ] as const) {
    test(`${name} from the server ends the session: the request fails as a reset, and the next one gets a new session`, async () => {
      const fake = start({ instead: (c, id) => (c.index === 0 ? bad(id) : undefined) });
      const orders = await caller([fake.port], `---
apiVersion: mesh.dev/v1alpha1
kind: DestinationPolicy
metadata:
  name: payments
spec:
  retries: { attempts: 0 }
  outlierDetection: { consecutiveFailures: 100 }
`);
      const r = await call(orders.ports.outbound, "/broken", { method: "POST", body: "x" });
      expect(r.status).toBe(502);
      expect(r.meshError).toBe("upstream-reset");
      expect(await Promise.race([(async () => { while (!fake.conns[0]!.gone) await Bun.sleep(10); return true; })(), Bun.sleep(5000).then(() => false)])).toBe(true);
      const next = await call(orders.ports.outbound, "/after", { method: "POST", body: "y" });
      expect(next.status).toBe(200);
      expect(JSON.parse(next.body)).toMatchObject({ conn: 1, path: "/after" });
      orders.proc.kill("SIGKILL");
    });
  }
});

// ---- 10. drain through the pair ----

describe("drain", () => {
  test("SIGTERM to one of two inbounds with streams in flight: those complete, and new requests go to the other", async () => {
    const a = await fx.proxy("payments", svcUrl());
    const b = await fx.proxy("payments", svcUrl());
    const orders = await caller([a.ports.inbound, b.ports.inbound], `---
apiVersion: mesh.dev/v1alpha1
kind: DestinationPolicy
metadata:
  name: payments
spec:
  loadBalancer: { type: round-robin }
`);
    // Sessions to both.
    const warm = await Promise.all(Array.from({ length: 10 }, (_, i) => call(orders.ports.outbound, `/echo?i=w${i}`)));
    expect(warm.map((r) => r.status)).toEqual(Array(10).fill(200));
    expect(await inboundConns(a.ports.admin)).toBe(1);
    expect(await inboundConns(b.ports.admin)).toBe(1);
    const inflight = Array.from({ length: 10 }, (_, i) => call(orders.ports.outbound, `/slow?ms=800&i=${i}`));
    await Bun.sleep(200);
    a.proc.kill("SIGTERM");
    await Bun.sleep(50);
    // Requests after the GOAWAY, POSTs (never resent once the server may have read them): none fails,
    // as a refused stream is as safe to resend as a failed connect.
    const after: ReturnType<typeof call>[] = [];
    for (let i = 0; i < 40; i++) {
      after.push(call(orders.ports.outbound, `/echo?i=a${i}`, { method: "POST", body: `a${i}` }));
      await Bun.sleep(5);
    }
    const [done, later] = await Promise.all([Promise.all(inflight), Promise.all(after)]);
    expect(done.map((r) => r.status)).toEqual(Array(10).fill(200));
    expect(done.map((r) => r.body)).toEqual(Array.from({ length: 10 }, (_, i) => `slow ${i}`));
    expect(later.filter((r) => r.status !== 200)).toEqual([]);
    expect(await a.proc.exited).toBe(0);
    orders.proc.kill("SIGKILL");
    b.proc.kill("SIGKILL");
  }, 30_000);

  test("SIGKILL of the inbound fails every request in flight on its session at once (reset, not a timeout)", async () => {
    const x = await fx.proxy("payments", svcUrl());
    const orders = await caller([x.ports.inbound]);
    expect((await call(orders.ports.outbound, "/echo?i=warm")).status).toBe(200);
    // POSTs: never retried once sent. The service would answer only after the request timeout (15 s).
    const inflight = Array.from({ length: 10 }, (_, i) => call(orders.ports.outbound, `/slow?ms=20000&i=${i}`, { method: "POST", body: `p${i}` }));
    await Bun.sleep(300);
    x.proc.kill("SIGKILL");
    const results = await Promise.all(inflight);
    expect(results.map((r) => r.status)).toEqual(Array(10).fill(502));
    expect(results.map((r) => r.meshError)).toEqual(Array(10).fill("upstream-reset"));
    orders.proc.kill("SIGKILL");
  }, 30_000);
});
