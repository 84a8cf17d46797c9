/**
 * Attacker's review of HTTP/2 and gRPC through real sidecars (threats.md, "HTTP/2", and the
 * defaults: a malformed message gets an error, nothing is forwarded, the process lives and
 * its memory stays bounded; identity headers never reach the service from a client).
 *
 * Topology, all on loopback:
 *   raw frames / node:http2 / grpc-js  →  orders sidecar (outbound, h2c)
 *     →  mTLS, ALPN h2  →  payments sidecar (inbound)  →  a recording h2c service
 *     →  mTLS, ALPN h2  →  greeter sidecar (inbound)   →  a grpc-js Greeter
 * and, for a caller that is not orders, frames straight to an inbound over TLS with the
 * certificate of "web" (a valid workload of the same CA).
 *
 * Every test asserts the safe behaviour. Six findings of the review failed here first:
 * a body cut short by the upstream reaching the client as complete (Bun's
 * ServerHttp2Stream.close sends END_STREAM, not RST_STREAM); rapid resets spread over
 * connections cutting other callers' calls on the shared session between sidecars; a
 * fragment or a non-ASCII byte in :path; host differing from :authority; and the body
 * limit escaped by a content type that merely starts with application/grpc, or by one
 * large gRPC message.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import http2, { type IncomingHttpHeaders, type ServerHttp2Stream } from "node:http2";
import type net from "node:net";
import { join } from "node:path";
import { mesh } from "../helpers/cli.ts";
import { clientTls, rssMiB } from "../helpers/data-plane.ts";
import { fixtureFor, metricValue } from "../helpers/mesh-fixture.ts";
import { greeterClient, greeterService, grpc, unary, type GreeterService, type Greeting } from "../helpers/grpc.ts";
import { eventually } from "../helpers/wait.ts";
import { block, F, frame, headerFrames, indexed, literal, literalIndexed, RawH2, request, rstFrame, settings, T } from "../helpers/raw-h2.ts";

const ORDERS = "spiffe://mesh.local/ns/default/sa/orders";
const WEB = "spiffe://mesh.local/ns/default/sa/web";
const MAX_BODY = 65536;

// ---------------------------------------------------------------------------------------
// The services
// ---------------------------------------------------------------------------------------
interface Recorded {
  path: string;
  headers: Record<string, unknown>;
  bodyBytes: number;
}

/**
 * A plain h2c service that records every stream it is given. /big-*: streams up to 256
 * MiB, honouring backpressure, counting what it could write. /hold-*: answers, then ends
 * 2.5 s later. /die-rst-*, /die-conn-*: answers, writes a little, then resets the stream
 * (RST_STREAM INTERNAL_ERROR) or drops its whole connection (GOAWAY INTERNAL_ERROR, close).
 * Anything else: 200 with the body's byte count, once the request has ended.
 */
async function recordingService() {
  const seen: Recorded[] = [];
  const state = { written: 0, bigOpen: 0 };
  const server = http2.createServer({ settings: { maxConcurrentStreams: 1000 } });
  server.on("session", (s) => s.on("error", () => {}));
  server.on("stream", (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => {
    const rec: Recorded = { path: String(headers[":path"]), headers: { ...headers }, bodyBytes: 0 };
    seen.push(rec);
    stream.on("error", () => {});
    stream.on("data", (d: Buffer) => (rec.bodyBytes += d.byteLength));
    if (rec.path.startsWith("/big")) {
      const chunk = Buffer.alloc(64 * 1024, 120);
      stream.respond({ ":status": 200 });
      state.bigOpen++;
      stream.on("close", () => state.bigOpen--);
      const pump = () => {
        while (state.written < 256 * 2 ** 20 && !stream.destroyed) {
          state.written += chunk.byteLength;
          if (!stream.write(chunk)) return void stream.once("drain", pump);
        }
        if (!stream.destroyed) stream.end();
      };
      return pump();
    }
    if (rec.path.startsWith("/hold")) {
      stream.respond({ ":status": 200 });
      stream.write("started\n");
      const t = setTimeout(() => !stream.destroyed && stream.end("done\n"), 2500);
      stream.on("close", () => clearTimeout(t));
      return;
    }
    if (rec.path.startsWith("/die")) {
      stream.respond({ ":status": 200 });
      stream.write("partial\n");
      // stream.destroy(err) is what sends a real RST_STREAM in Bun (stream.close(code) ends the stream cleanly).
      setTimeout(() => (rec.path.startsWith("/die-rst") ? stream.destroy(new Error("boom")) : stream.session?.destroy(new Error("boom"))), 200);
      return;
    }
    stream.on("end", () => {
      if (stream.destroyed) return;
      stream.respond({ ":status": 200, "content-type": "application/json" });
      stream.end(JSON.stringify({ path: rec.path, bytes: rec.bodyBytes }));
    });
    stream.resume();
  });
  const port = await new Promise<number>((resolve) => server.listen(0, "127.0.0.1", () => resolve((server.address() as net.AddressInfo).port)));
  return { port, seen, state, close: () => server.close() };
}

const fx = fixtureFor("orders", "greeter", "payments", "web");
let svc: GreeterService;
let rec: Awaited<ReturnType<typeof recordingService>>;
let greeter: Awaited<ReturnType<typeof fx.proxy>>;
let payments: Awaited<ReturnType<typeof fx.proxy>>;
let orders: Awaited<ReturnType<typeof fx.proxy>>;

const POLICIES = `---
apiVersion: mesh.dev/v1alpha1
kind: AuthorizationPolicy
metadata: { name: no-admin }
spec:
  service: payments
  action: deny
  rules:
    - to: { paths: [/admin, /admin/*] }
---
apiVersion: mesh.dev/v1alpha1
kind: AuthorizationPolicy
metadata: { name: hello-for-orders-only }
spec:
  service: greeter
  action: deny
  rules:
    - from: { notServices: [orders] }
      to: { paths: [/mesh.test.Greeter/Hello] }
`;

beforeAll(async () => {
  svc = await greeterService();
  rec = await recordingService();
  greeter = await fx.proxy("greeter", `http://127.0.0.1:${svc.port}`, fx.config("greeter", {}, POLICIES));
  payments = await fx.proxy("payments", `http://127.0.0.1:${rec.port}`, fx.config("payments", {}, POLICIES), ["--max-body-size", String(MAX_BODY)]);
  orders = await fx.proxy("orders", fx.echo("orders").url, fx.config("orders", { greeter: [greeter.ports.inbound], payments: [payments.ports.inbound] }));
});
afterAll(async () => {
  await svc?.stop();
  rec?.close();
});

const webTls = () => clientTls(fx, "web");
/** A unique path starting with `/${name}` (the service picks its behaviour by that prefix). */
const marker = (name: string) => `/${name}-${Math.random().toString(36).slice(2, 10)}`;
const seenWith = (m: string) => rec.seen.filter((r) => r.path.includes(m.slice(1)) || JSON.stringify(r.headers).includes(m.slice(1)));
const sidecarRss = () => rssMiB(orders.proc.pid) + rssMiB(payments.proc.pid);

/** A gRPC call through the orders sidecar succeeds: the sidecars still serve. */
async function greeterWorks(): Promise<void> {
  const client = greeterClient(orders.ports.outbound, "greeter");
  const r = await unary<Greeting>(client, "hello", { name: "after" });
  client.close();
  expect(r.error?.message).toBeUndefined();
  expect(r.value?.message).toBe("hello after");
}

/** A plain HTTP/2 request over a node:http2 session; status, body and how the stream ended. */
async function h2Call(session: http2.ClientHttp2Session, headers: http2.OutgoingHttpHeaders, body?: Buffer, waitMs = 5000) {
  const req = session.request(headers, { endStream: body === undefined });
  const out = { status: 0, headers: {} as http2.IncomingHttpHeaders, body: "", ended: false, error: "", rstCode: -1 };
  req.on("response", (h) => {
    out.status = Number(h[":status"]);
    out.headers = h;
  });
  req.on("data", (d: Buffer) => (out.body += d.toString("latin1")));
  req.on("end", () => (out.ended = true));
  req.on("error", (e) => (out.error = e.message));
  if (body !== undefined) req.end(body);
  await new Promise<void>((resolve) => {
    req.on("close", () => resolve());
    setTimeout(resolve, waitMs);
  });
  out.rstCode = req.rstCode ?? -1;
  return out;
}
const outboundSession = () => {
  const s = http2.connect(`http://127.0.0.1:${orders.ports.outbound}`);
  s.on("error", () => {});
  return s;
};
const inboundSession = (port: number, creds = webTls()) => {
  const s = http2.connect(`https://127.0.0.1:${port}`, { ...creds, rejectUnauthorized: true, checkServerIdentity: () => undefined });
  s.on("error", () => {});
  return s;
};

/** `count` HEADERS, each followed at once by RST_STREAM(CANCEL), in batches of 100. */
async function rapidReset(c: RawH2, authority: string, count: number, path: (id: number) => string): Promise<number> {
  let sent = 0;
  while (sent < count && !c.closed) {
    const parts: Buffer[] = [];
    for (const end = Math.min(count, sent + 100); sent < end; sent++) {
      const id = 1 + 2 * sent;
      parts.push(frame(T.HEADERS, F.END_HEADERS, id, block(request(authority, path(id), [], "POST"))), rstFrame(id));
    }
    c.write(Buffer.concat(parts));
    await Bun.sleep(1);
  }
  return sent;
}

// ---------------------------------------------------------------------------------------
describe("rapid reset (CVE-2023-44487)", () => {
  test("5,000 HEADERS+RST_STREAM on one outbound connection: cut off, the service sees a fraction, memory bounded, calls still work", async () => {
    const rss = sidecarRss();
    const m = marker("rr-out");
    const c = await RawH2.plain(orders.ports.outbound);
    await rapidReset(c, "payments", 5000, (id) => `${m}-${id}`);
    await eventually(() => c.closed, 3000);
    await Bun.sleep(300);
    const reached = seenWith(m).length;
    c.close();
    expect({ cut: c.closed || c.goawayCode() !== undefined, reachedAtMost600: reached <= 600 }).toEqual({ cut: true, reachedAtMost600: true });
    expect(sidecarRss() - rss).toBeLessThan(96);
    await greeterWorks();
  });

  test("the same straight to the payments inbound from a peer with a valid certificate (web)", async () => {
    const m = marker("rr-in");
    const c = await RawH2.tls(payments.ports.inbound, webTls());
    await rapidReset(c, "payments", 5000, (id) => `${m}-${id}`);
    await eventually(() => c.closed, 3000);
    await Bun.sleep(300);
    const reached = seenWith(m).length;
    c.close();
    expect({ cut: c.closed || c.goawayCode() !== undefined, reachedAtMost600: reached <= 600 }).toEqual({ cut: true, reachedAtMost600: true });
    await greeterWorks();
  });

  test("rapid resets spread over local connections of 450 streams each (under the per-connection guard) do not cut another client's call in flight", async () => {
    // The outbound relays each reset onto the one mTLS session it shares with every other
    // client's calls to payments; the payments inbound's churn guard counts that shared
    // session, so the attacker's resets from several connections add up there.
    const legit = outboundSession();
    const call = h2Call(legit, { ":path": marker("hold"), ":authority": "payments" }, undefined, 6000);
    await Bun.sleep(300);
    let done = false;
    void call.then(() => (done = true));
    // Rounds of 3 fresh connections, 450 streams each, while the call runs (at most 8 rounds).
    for (let round = 0; round < 8 && !done; round++) {
      const attackers = await Promise.all([1, 2, 3].map(() => RawH2.plain(orders.ports.outbound)));
      await Promise.all(attackers.map((c, i) => rapidReset(c, "payments", 450, (id) => `/rr-shared-${round}-${i}-${id}`)));
      await Bun.sleep(50);
      for (const c of attackers) c.close();
    }
    const got = await call;
    legit.close();
    // (As reviewed, no attacker connection is cut off: each stays under its own session's limit.)
    expect({ status: got.status, body: got.body, rstCode: got.rstCode }).toEqual({ status: 200, body: "started\ndone\n", rstCode: 0 });
  });
});

// ---------------------------------------------------------------------------------------
describe("header blocks", () => {
  for (const side of ["outbound", "inbound"] as const) {
    const open = () => (side === "outbound" ? RawH2.plain(orders.ports.outbound) : RawH2.tls(payments.ports.inbound, webTls()));

    test(`${side}: a CONTINUATION flood (HEADERS without END_HEADERS, then up to 64 MB of CONTINUATION) is cut off early; nothing reaches the service`, async () => {
      const rss = sidecarRss();
      const m = marker(`cont-${side}`);
      const c = await open();
      c.write(frame(T.HEADERS, 0, 1, block(request("payments", m))));
      const junk = literal("x-junk", "a".repeat(15990));
      // Written with backpressure, so `sent` is about what the sidecar took in (plus socket buffers).
      let sent = 0;
      for (let i = 0; i < 4000 && !c.closed; i++) {
        sent += junk.byteLength;
        if (!c.write(frame(T.CONTINUATION, 0, 1, junk))) await Promise.race([new Promise((r) => c.sock.once("drain", r)), eventually(() => c.closed, 2000)]);
      }
      await eventually(() => c.closed, 2000);
      c.close();
      expect(c.closed).toBe(true);
      // (Bun's TLS client socket takes every write without backpressure: `sent` means nothing there.)
      if (side === "outbound") expect(sent).toBeLessThan(16 * 2 ** 20);
      expect(seenWith(m)).toEqual([]);
      expect(sidecarRss() - rss).toBeLessThan(64);
    });

    test(`${side}: an HPACK bomb (one 4,000-byte table entry referenced 15,000 times: 60 MB decoded) is refused; nothing reaches the service`, async () => {
      const m = marker(`bomb-${side}`);
      const c = await open();
      const parts = [block(request("payments", m)), literalIndexed("x-bomb", "b".repeat(4000))];
      for (let i = 0; i < 15000; i++) parts.push(indexed(62));
      c.write(headerFrames(1, Buffer.concat(parts), true));
      await eventually(() => c.outcome(1) !== "none", 2000);
      await Bun.sleep(100);
      c.close();
      // Refused: reset, the connection ended, or answered 431 as an HTTP/1.1 head that large is (RFC 9113 §10.5.1).
      expect(c.outcome(1) === "response" ? c.status(1) : "refused").toMatch(/^(431|refused)$/);
      expect(c.outcome(1)).not.toBe("none");
      expect(seenWith(m)).toEqual([]);
    });

    test(`${side}: header lists over 64 KiB (one 100 KiB value; 10,000 small fields) are refused; nothing reaches the service`, async () => {
      const m = marker(`big-${side}`);
      const many: [string, string][] = Array.from({ length: 10000 }, (_, i) => [`x-h${i}`, "v"]);
      for (const extra of [[["x-big", "c".repeat(100 * 1024)]] as [string, string][], many]) {
        const c = await open();
        c.headers(1, request("payments", m, extra));
        await eventually(() => c.outcome(1) !== "none", 2000);
        await Bun.sleep(100);
        c.close();
        expect(c.outcome(1) === "response" ? c.status(1) : "refused").toMatch(/^(431|refused)$/);
        expect(c.outcome(1)).not.toBe("none");
      }
      expect(seenWith(m)).toEqual([]);
    });
  }
});

// ---------------------------------------------------------------------------------------
/** Writes `unit` in bursts of 1,000, `bursts` times at most, until the sidecar closes `c`; whether it did (c is closed after). */
async function floodUntilClosed(c: RawH2, unit: Buffer, bursts: number): Promise<boolean> {
  const burst = Buffer.concat(Array.from({ length: 1000 }, () => unit));
  for (let i = 0; i < bursts && !c.closed; i++) {
    c.write(burst);
    if (i % 10 === 0) await Bun.sleep(1);
  }
  await eventually(() => c.closed, 3000);
  const closed = c.closed;
  c.close();
  return closed;
}

describe("control-frame floods from a client that never reads", () => {
  for (const [name, unit] of [
    ["PING", frame(T.PING, 0, 0, Buffer.alloc(8))],
    ["SETTINGS", settings([[4, 65535]])],
  ] as const) {
    test(`${name} flood (up to 1,000,000 frames, each owing an ACK): the connection is closed, memory bounded, the sidecar serves`, async () => {
      const rss = sidecarRss();
      const c = await RawH2.plain(orders.ports.outbound);
      c.sock.pause();
      expect(await floodUntilClosed(c, unit, 1000)).toBe(true);
      expect(sidecarRss() - rss).toBeLessThan(64);
      await greeterWorks();
    });
  }

  test("empty DATA frames on an open stream (300,000): the connection is closed", async () => {
    const c = await RawH2.plain(orders.ports.outbound);
    c.write(frame(T.HEADERS, F.END_HEADERS, 1, block(request("payments", marker("empty-data"), [], "POST"))));
    expect(await floodUntilClosed(c, frame(T.DATA, 0, 1), 300)).toBe(true);
    await greeterWorks();
  });
});

// ---------------------------------------------------------------------------------------
describe("flow control and concurrency", () => {
  test("zero-window stall: clients that never open their window hold the service to a bounded amount, memory bounded, others served", async () => {
    const rss = sidecarRss();
    const written = rec.state.written;
    const zero = await RawH2.plain(orders.ports.outbound, [[4, 0]]); // SETTINGS_INITIAL_WINDOW_SIZE 0
    zero.headers(1, request("payments", marker("big-zero")));
    const never = await RawH2.plain(orders.ports.outbound); // 64 KiB, never a WINDOW_UPDATE
    never.headers(1, request("payments", marker("big-noupdate")));
    await Bun.sleep(2000);
    const stalled = rec.state.written - written;
    await greeterWorks();
    expect(stalled).toBeGreaterThan(0); // the service did start both responses
    expect(zero.dataBytes(1)).toBe(0);
    expect(never.dataBytes(1)).toBeLessThanOrEqual(65535);
    // 256 MiB were there to send: backpressure must hold the service to a few windows' worth.
    expect(stalled).toBeLessThan(16 * 2 ** 20);
    expect(sidecarRss() - rss).toBeLessThan(64);
    zero.close();
    never.close();
    // The stalled calls end at the service too once their clients go.
    expect(await eventually(() => rec.state.bigOpen === 0, 3000)).toBe(true);
  });

  test("300 streams opened at once on one connection (limit 100): the excess is refused, not queued; the service sees at most 100", async () => {
    const m = marker("conc");
    const c = await RawH2.plain(orders.ports.outbound);
    const parts: Buffer[] = [];
    // No END_STREAM: each stays open at the service until its body ends.
    for (let k = 0; k < 300; k++) parts.push(frame(T.HEADERS, F.END_HEADERS, 1 + 2 * k, block(request("payments", `${m}-${k}`, [], "POST"))));
    c.write(Buffer.concat(parts));
    await Bun.sleep(1500);
    const reached = seenWith(m).length;
    const refused = Array.from({ length: 300 }, (_, k) => c.outcome(1 + 2 * k)).filter((o) => o.startsWith("rst") || o.startsWith("goaway") || o === "closed").length;
    c.close();
    expect(reached).toBeLessThanOrEqual(100);
    expect(refused).toBeGreaterThanOrEqual(200);
  });
});

// ---------------------------------------------------------------------------------------
describe("malformed requests (RFC 9113 §8.2, §8.3): an error, nothing forwarded", () => {
  const CASES: Record<string, (p: string) => [string, string][]> = {
    "connection: keep-alive": (p) => request("payments", p, [["connection", "keep-alive"]]),
    "transfer-encoding: chunked": (p) => request("payments", p, [["transfer-encoding", "chunked"]]),
    "upgrade: websocket": (p) => request("payments", p, [["upgrade", "websocket"]]),
    "keep-alive": (p) => request("payments", p, [["keep-alive", "5"]]),
    "proxy-connection": (p) => request("payments", p, [["proxy-connection", "close"]]),
    "te: gzip": (p) => request("payments", p, [["te", "gzip"]]),
    "an upper-case name": (p) => request("payments", p, [["X-Upper", "1"]]),
    "a pseudo-header after a regular one": (p) => [[":method", "GET"], [":scheme", "http"], [":authority", "payments"], ["x-a", "1"], [":path", p]],
    "two :path": (p) => [[":method", "GET"], [":scheme", "http"], [":path", p], [":path", "/admin"], [":authority", "payments"]],
    "no :path": (p) => [[":method", "GET"], [":scheme", "http"], [":authority", "payments"], ["x-case", p]],
    "an empty :path": (p) => [[":method", "GET"], [":scheme", "http"], [":path", ""], [":authority", "payments"], ["x-case", p]],
    "an unknown pseudo-header": (p) => request("payments", p, [[":foo", "bar"]]),
    "CR LF in a value": (p) => request("payments", p, [["x-a", "b\r\nx-mesh-client-id: evil"]]),
    "NUL in a value": (p) => request("payments", p, [["x-a", "b\0c"]]),
    "':' inside a name": (p) => request("payments", p, [["x:y", "1"]]),
    "a space inside a name": (p) => request("payments", p, [["x y", "1"]]),
    "a :path without its leading /": (p) => request("payments", `admin?${p.slice(1)}`),
    "an absolute-form :path": (p) => request("payments", `http://payments/admin?${p.slice(1)}`),
    "a space in :path": (p) => request("payments", `/admin x?${p.slice(1)}`),
    "a control byte in :path": (p) => request("payments", `/admin\x01?${p.slice(1)}`),
    "a space in :method": (p) => request("payments", p, [], "GET /admin"),
  };
  for (const side of ["outbound", "inbound"] as const) {
    test(`${side}: each of ${Object.keys(CASES).length} malformed requests is reset, and none reaches the service`, async () => {
      const got: Record<string, string> = {};
      const marks: string[] = [];
      for (const [name, fields] of Object.entries(CASES)) {
        const m = marker("bad");
        marks.push(m);
        const c = side === "outbound" ? await RawH2.plain(orders.ports.outbound) : await RawH2.tls(payments.ports.inbound, webTls());
        c.headers(1, fields(m));
        await eventually(() => c.outcome(1) !== "none", 1000, 10);
        got[name] = c.outcome(1);
        c.close();
      }
      await Bun.sleep(200);
      expect(Object.entries(got).filter(([, o]) => !o.startsWith("rst") && !o.startsWith("goaway"))).toEqual([]);
      expect(marks.flatMap((m) => seenWith(m).map((r) => r.path))).toEqual([]);
    });
  }

  test("a :path with a fragment (/admin#x), which HTTP/1.1 refuses with 400, is refused too: it would pass a deny on /admin", async () => {
    const results: string[] = [];
    for (const side of ["outbound", "inbound"] as const) {
      const m = marker("frag");
      const c = side === "outbound" ? await RawH2.plain(orders.ports.outbound) : await RawH2.tls(payments.ports.inbound, webTls());
      c.headers(1, request("payments", `/admin#${m.slice(1)}`));
      await eventually(() => c.outcome(1) !== "none", 1000, 10);
      await Bun.sleep(100);
      c.close();
      // What a service's router makes of the :path it was given.
      results.push(...seenWith(m).map((r) => `${side}: the service got ${r.path}, read as ${new URL(r.path, "http://payments").pathname}`));
    }
    expect(results).toEqual([]);
  });

  test("a :path with a byte outside visible ASCII (0x7F, 0xFF), which HTTP/1.1 refuses with 400, is refused too", async () => {
    const results: string[] = [];
    for (const byte of ["\x7f", "\xff"]) {
      const m = marker("byte");
      const c = await RawH2.plain(orders.ports.outbound);
      c.headers(1, request("payments", `/admin${byte}?${m.slice(1)}`));
      await eventually(() => c.outcome(1) !== "none", 1000, 10);
      await Bun.sleep(100);
      c.close();
      results.push(...seenWith(m).map((r) => JSON.stringify(r.path)));
    }
    expect(results).toEqual([]);
  });

  test("a host field naming another service than :authority is refused, or never reaches the service", async () => {
    const m = marker("host");
    const c = await RawH2.plain(orders.ports.outbound);
    c.headers(1, request("payments", m, [["host", "greeter"]]));
    await eventually(() => c.outcome(1) !== "none", 1000, 10);
    await Bun.sleep(100);
    c.close();
    const mismatched = seenWith(m).filter((r) => r.headers.host !== undefined && r.headers.host !== r.headers[":authority"]);
    expect(mismatched.map((r) => `:authority ${r.headers[":authority"]}, host ${r.headers.host}`)).toEqual([]);
  });

  test("paths in other forms are put in normal form or refused, on the outbound→inbound path: the deny on /admin holds", async () => {
    const marks: string[] = [];
    const outcomes: string[] = [];
    for (const path of ["/x/../admin", "/%61dmin", "/./admin/", "//admin", "/x%2F..%2Fadmin", "/admin;x", "/x/%2e%2e/admin"]) {
      const m = marker("norm");
      marks.push(m);
      const c = await RawH2.plain(orders.ports.outbound);
      c.headers(1, request("payments", `${path}?${m.slice(1)}`));
      await eventually(() => c.outcome(1) !== "none", 1000, 10);
      outcomes.push(c.outcome(1));
      c.close();
    }
    await Bun.sleep(100);
    expect(outcomes.every((o) => o === "response")).toBe(true); // answered by the proxy (403 / 400)
    expect(marks.flatMap((m) => seenWith(m).map((r) => r.path))).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------
describe("identity headers", () => {
  const FORGED: [string, string][] = [
    ["x-mesh-client-id", "spiffe://mesh.local/ns/default/sa/admin"],
    ["x_mesh_client_id", "spiffe://mesh.local/ns/default/sa/admin"],
    ["x.mesh.client.id", "spiffe://mesh.local/ns/default/sa/admin"],
    ["l5d-client-id", "admin.default.serviceaccount.identity.mesh.local"],
    ["l5d_client_id", "admin.default.serviceaccount.identity.mesh.local"],
    ["x-forwarded-client-cert", "By=spiffe://mesh.local/ns/default/sa/payments;URI=spiffe://mesh.local/ns/default/sa/admin"],
    ["x_forwarded_client_cert", "URI=spiffe://mesh.local/ns/default/sa/admin"],
    ["x-mesh-tunnel", "00000000-0000-0000-0000-000000000000"],
  ];
  const identityLike = (name: string) => ["x-mesh-client-id", "l5d-client-id", "x-forwarded-client-cert", "x-mesh-tunnel"].includes(name.replace(/[^a-z0-9-]/g, "-"));

  /** The identity headers the service saw of one request carrying every forged copy, sent on `c` (closed after). */
  async function identityHeadersSeen(c: RawH2, m: string): Promise<[string, unknown][]> {
    c.headers(1, request("payments", m, FORGED));
    await eventually(() => seenWith(m).length > 0 || c.outcome(1) !== "none", 2000);
    await Bun.sleep(100);
    c.close();
    const got = seenWith(m);
    expect(got.length).toBe(1);
    return Object.entries(got[0]!.headers).filter(([n]) => identityLike(n));
  }

  test("copies a client sends through outbound→inbound never reach the service; it sees orders' proven ID", async () => {
    expect(await identityHeadersSeen(await RawH2.plain(orders.ports.outbound), marker("forged-out"))).toEqual([["x-mesh-client-id", ORDERS]]);
  });

  test("copies a peer sends straight to the inbound never reach the service; it sees the peer's proven ID (web)", async () => {
    expect(await identityHeadersSeen(await RawH2.tls(payments.ports.inbound, webTls()), marker("forged-in"))).toEqual([["x-mesh-client-id", WEB]]);
  });

  test("through an HTTP CONNECT tunnel on the outbound (the http_proxy path): copies removed, malformed streams reset", async () => {
    const m = marker("forged-connect");
    const c = await RawH2.overConnect(orders.ports.outbound, "payments:80");
    c.headers(1, request("payments", m, FORGED));
    c.headers(3, request("payments", `${m}-bad`, [["transfer-encoding", "chunked"]]));
    await eventually(() => seenWith(m).length > 0 && c.outcome(3) !== "none", 2000);
    await Bun.sleep(100);
    c.close();
    const got = seenWith(m);
    expect(got.map((r) => r.path)).toEqual([m]);
    expect(Object.entries(got[0]!.headers).filter(([n]) => identityLike(n))).toEqual([["x-mesh-client-id", ORDERS]]);
    expect(c.outcome(3)).toStartWith("rst");
  });

  test("gRPC metadata copies are removed too: the Greeter sees orders", async () => {
    const client = greeterClient(orders.ports.outbound, "greeter");
    const md = new grpc.Metadata();
    for (const [n, v] of FORGED) if (!n.includes(".")) md.set(n, v);
    const before = svc.calls.length;
    const r = await unary<Greeting>(client, "hello", { name: "x" }, md);
    client.close();
    expect(r.value?.caller).toBe(ORDERS);
    const md2 = svc.calls[before]!.getMap();
    expect(Object.entries(md2).filter(([n]) => identityLike(n))).toEqual([["x-mesh-client-id", ORDERS]]);
  });
});

// ---------------------------------------------------------------------------------------
describe("authorization on the inbound over ALPN h2, from a peer with a valid certificate", () => {
  test("gRPC: web calling Hello gets PERMISSION_DENIED, also through dot-segments; the service sees none", async () => {
    const creds = webTls();
    const Client = grpc.makeGenericClientConstructor({}, "Raw");
    const client = new Client(`127.0.0.1:${greeter.ports.inbound}`, grpc.credentials.createSsl(Buffer.from(creds.ca), Buffer.from(creds.key), Buffer.from(creds.cert), { checkServerIdentity: () => undefined }), {
      "grpc.ssl_target_name_override": "greeter",
      "grpc.default_authority": "greeter",
    });
    const before = svc.calls.length;
    const codes: number[] = [];
    for (const path of ["/mesh.test.Greeter/Hello", "/mesh.test.Greeter/./Hello", "/x/../mesh.test.Greeter/Hello", "/mesh.test.Greeter/%48ello"]) {
      codes.push(
        await new Promise<number>((resolve) =>
          client.makeUnaryRequest(path, (v: unknown) => Buffer.from(JSON.stringify(v)), (b: Buffer) => JSON.parse(b.toString()), { name: "w" }, (err: grpc.ServiceError | null) => resolve(err?.code ?? 0)),
        ),
      );
    }
    client.close();
    expect(codes).toEqual([grpc.status.PERMISSION_DENIED, grpc.status.PERMISSION_DENIED, grpc.status.PERMISSION_DENIED, grpc.status.PERMISSION_DENIED]);
    expect(svc.calls.length).toBe(before);
  });

  test("plain HTTP/2: /admin and paths that normalize into it get 403, escaped slashes 400; the service sees none", async () => {
    const s = inboundSession(payments.ports.inbound);
    const statuses: Record<string, number> = {};
    const marks: string[] = [];
    for (const path of ["/admin", "/admin/x", "/x/../admin", "/%61dmin", "//admin", "/x/%2e%2e/admin", "/x%2F..%2Fadmin"]) {
      const m = marker("authz");
      marks.push(m);
      statuses[path] = (await h2Call(s, { ":path": `${path}?${m.slice(1)}`, ":authority": "payments" })).status;
    }
    s.close();
    expect(statuses).toEqual({ "/admin": 403, "/admin/x": 403, "/x/../admin": 403, "/%61dmin": 403, "//admin": 403, "/x/%2e%2e/admin": 403, "/x%2F..%2Fadmin": 400 });
    expect(marks.flatMap((m) => seenWith(m).map((r) => r.path))).toEqual([]);
    expect(await metricValue(payments.ports.admin, "mesh_authorization_denied_total", { peer: "web" })).toBeGreaterThanOrEqual(6);
  });
});

// ---------------------------------------------------------------------------------------
describe("TLS on the inbound", () => {
  async function attempt(creds: Partial<{ cert: string; key: string; ca: string }>, m: string) {
    const s = http2.connect(`https://127.0.0.1:${payments.ports.inbound}`, { ...creds, rejectUnauthorized: true, checkServerIdentity: () => undefined, ALPNProtocols: ["h2"] } as never);
    let sessionError = "";
    s.on("error", (e) => (sessionError = e.message));
    const r = await h2Call(s, { ":path": m, ":authority": "payments" }, undefined, 3000);
    s.destroy();
    return { status: r.status, failed: r.error !== "" || sessionError !== "" || r.status === 0 };
  }

  test("no client certificate: refused, nothing reaches the service", async () => {
    const m = marker("nocert");
    const r = await attempt({ ca: webTls().ca }, m);
    expect(r).toEqual({ status: 0, failed: true });
    expect(seenWith(m)).toEqual([]);
  });

  test("a certificate from another CA (same trust domain name): refused, nothing reaches the service", async () => {
    const evilCa = join(fx.tmp.path, "evil-ca");
    const init = await mesh("ca", "init", "--trust-domain", "mesh.local", "--out", evilCa);
    expect(init.code).toBe(0);
    await fx.issue("intruder", evilCa);
    const intruder = clientTls(fx, "intruder");
    const m = marker("evilca");
    const r = await attempt({ cert: intruder.cert, key: intruder.key, ca: webTls().ca }, m);
    expect(r).toEqual({ status: 0, failed: true });
    expect(seenWith(m)).toEqual([]);
  });

  test("a plaintext HTTP/2 preface on the inbound: nothing reaches the service", async () => {
    const m = marker("plain-in");
    const c = await RawH2.plain(payments.ports.inbound);
    c.headers(1, request("payments", m));
    await eventually(() => c.closed, 2000);
    c.close();
    expect(c.of(T.HEADERS)).toEqual([]);
    expect(seenWith(m)).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------
describe("request bodies and --max-body-size", () => {
  test("a plain HTTP/2 body of 1 MiB (limit 64 KiB): 413, and the service gets no more than the limit", async () => {
    const s = outboundSession();
    const declared = marker("body-cl");
    const streamed = marker("body-stream");
    const a = await h2Call(s, { ":method": "POST", ":path": declared, ":authority": "payments", "content-length": String(2 ** 20) }, Buffer.alloc(2 ** 20, 97), 2000);
    const b = await h2Call(s, { ":method": "POST", ":path": streamed, ":authority": "payments" }, Buffer.alloc(2 ** 20, 97), 2000);
    s.close();
    expect([a.status, b.status]).toEqual([413, 413]);
    expect([...seenWith(declared), ...seenWith(streamed)].every((r) => r.bodyBytes <= MAX_BODY)).toBe(true);
  });

  test("a 1 MiB upload to a plain service labelled 'application/grpcfoo' (not a gRPC type) is held to the limit too", async () => {
    const s = outboundSession();
    const m = marker("body-grpcfoo");
    const r = await h2Call(s, { ":method": "POST", ":path": m, ":authority": "payments", "content-type": "application/grpcfoo" }, Buffer.alloc(2 ** 20, 97));
    s.close();
    expect({ status: r.status, bytesAtService: Math.max(0, ...seenWith(m).map((x) => x.bodyBytes)) <= MAX_BODY }).toEqual({ status: 413, bytesAtService: true });
  });

  test("a gRPC message declaring 1 MiB (over --max-body-size) is refused, not sent on whole to the service", async () => {
    const s = outboundSession();
    const m = marker("body-grpc");
    const msg = Buffer.alloc(5 + 2 ** 20, 97);
    msg[0] = 0;
    msg.writeUInt32BE(2 ** 20, 1);
    const r = await h2Call(s, { ":method": "POST", ":path": m, ":authority": "payments", "content-type": "application/grpc", te: "trailers" }, msg);
    s.close();
    const atService = Math.max(0, ...seenWith(m).map((x) => x.bodyBytes));
    expect({ refused: r.status !== 200 || (r.headers["grpc-status"] ?? "0") !== "0" || r.rstCode > 0, bytesAtServiceWithinLimit: atService <= MAX_BODY }).toEqual({ refused: true, bytesAtServiceWithinLimit: true });
  });
});

// ---------------------------------------------------------------------------------------
describe("an upstream that fails mid-response: the client sees an error, never a clean end", () => {
  for (const [how, path] of [
    ["the service resets the stream (RST_STREAM INTERNAL_ERROR)", "/die-rst"],
    ["the service's connection dies (GOAWAY INTERNAL_ERROR, close)", "/die-conn"],
  ] as const) {
    for (const side of ["outbound", "inbound"] as const) {
      test(`${side}: ${how} after 8 bytes of a 200`, async () => {
        const c = side === "outbound" ? await RawH2.plain(orders.ports.outbound) : await RawH2.tls(payments.ports.inbound, webTls());
        c.headers(1, request("payments", marker(path.slice(1))));
        await eventually(() => c.ending(1) !== "open", 3000);
        await Bun.sleep(100);
        const got = { answered: c.outcome(1) === "response" || c.outcome(1).startsWith("rst"), ending: c.ending(1), bytes: c.dataBytes(1) };
        c.close();
        expect(got.answered).toBe(true);
        expect(got.bytes).toBe(8); // "partial\n" went through before the failure
        // A reset (or a closed connection), not END_STREAM: "partial\n" must not read as the whole body.
        expect(got.ending).not.toBe("end-stream");
        expect(got.ending).not.toBe("open");
      });
    }
  }
});

