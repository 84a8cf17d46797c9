/**
 * Retries of HTTP/2 calls on the outbound, against real servers: h2c services outside the
 * mesh that answer 503 or reset their streams, and grpc-js services behind their sidecars
 * that end calls UNAVAILABLE. Each destination alternates its two endpoints (round robin),
 * a failing one first, so every other call meets the failure.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import http2, { type IncomingHttpHeaders, type ServerHttp2Stream } from "node:http2";
import net from "node:net";
import { fixtureFor, metricValue } from "../helpers/mesh-fixture.ts";
import { F, frame, frameReader, rstFrame, settings, T } from "../helpers/raw-h2.ts";
import { alternatingService } from "../helpers/policies.ts";
import { greeterClient, greeterService, grpc, unary, type GreeterService, type Greeting } from "../helpers/grpc.ts";

const fx = fixtureFor("orders", "greeter");

/** A plain h2c server: `answer` decides each stream's fate once its whole request body is in. */
interface H2Server {
  port: number;
  /** Each request's method and body, as received. */
  seen: { method: string; body: Buffer }[];
  stop(): void;
}

/** `early`: answered as soon as the request head is in, its body still coming. */
async function h2Server(answer: (stream: ServerHttp2Stream, body: Buffer) => void, early = false): Promise<H2Server> {
  const seen: H2Server["seen"] = [];
  const server = http2.createServer();
  server.on("stream", (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => {
    if (early) answer(stream, Buffer.alloc(0));
    const chunks: Buffer[] = [];
    stream.on("data", (c: Buffer) => chunks.push(c));
    stream.on("end", () => {
      const body = Buffer.concat(chunks);
      seen.push({ method: String(headers[":method"]), body });
      if (!early) answer(stream, body);
    });
    stream.on("error", () => {});
  });
  const port = await new Promise<number>((resolve) => server.listen(0, "127.0.0.1", () => resolve((server.address() as { port: number }).port)));
  return { port, seen, stop: () => server.close() };
}

const ok = (stream: ServerHttp2Stream, body: Buffer) => {
  stream.respond({ ":status": 200, "x-served-by": "good" });
  stream.end(`got ${body.length} bytes`);
};
const unavailable = (stream: ServerHttp2Stream) => {
  stream.respond({ ":status": 503, "x-served-by": "failing" });
  stream.end("failing");
};
// destroy() resets (RST_STREAM INTERNAL_ERROR): the request reached this server, and no response did.
const reset = (stream: ServerHttp2Stream) => stream.destroy(new Error("reset by the test server"));
/**
 * An h2c server that refuses every stream with RST_STREAM REFUSED_STREAM (RFC 9113 §8.7:
 * not processed), as an overloaded server says it. By hand: Bun's node:http2 server sends
 * an empty DATA before the RST_STREAM, which makes the response malformed.
 */
async function refusingServer(): Promise<H2Server> {
  const seen: H2Server["seen"] = [];
  const server = net.createServer((sock) => {
    sock.on("error", () => {});
    sock.write(settings());
    sock.on(
      "data",
      frameReader(true, (type, flags, stream) => {
        if (type === T.SETTINGS && (flags & F.ACK) === 0) sock.write(frame(T.SETTINGS, F.ACK, 0));
        if (type === T.HEADERS) {
          seen.push({ method: "?", body: Buffer.alloc(0) });
          sock.write(rstFrame(stream, REFUSED_STREAM));
        }
      }),
    );
  });
  const port = await new Promise<number>((resolve) => server.listen(0, "127.0.0.1", () => resolve((server.address() as net.AddressInfo).port)));
  return { port, seen, stop: () => server.close() };
}
const REFUSED_STREAM = 7;

interface Reply {
  status: number;
  body: string;
  error: string | undefined;
  headers: IncomingHttpHeaders;
}

/** One HTTP/2 request to the sidecar's outbound listener, its outcome never thrown. */
function h2Call(session: http2.ClientHttp2Session, authority: string, method: string, body?: Buffer, extra: Record<string, string> = {}): Promise<Reply> {
  return new Promise((resolve) => {
    const req = session.request({ ":method": method, ":path": "/r", ":authority": authority, ...extra }, { endStream: body === undefined });
    const reply: Reply = { status: 0, body: "", error: undefined, headers: {} };
    req.on("response", (h) => {
      reply.status = Number(h[":status"]);
      reply.headers = h;
    });
    req.on("data", (d: Buffer) => (reply.body += d));
    req.on("error", (e) => (reply.error = e.message));
    req.on("close", () => resolve(reply));
    if (body !== undefined) req.end(body);
  });
}

/** A Service outside the mesh (plain h2c). */
const plainService = (name: string, failing: number, good: number, retries = "", policy = "") =>
  alternatingService(name, "  mtls: false\n  ports: [{ name: http, port: 80, protocol: http2 }]", failing, good, `backoff: { base: 5ms, max: 20ms }${retries}`, policy);

describe("plain HTTP/2", () => {
  let good: H2Server;
  let failing: H2Server;
  let resetting: H2Server;
  let early: H2Server;
  let refusing: H2Server;
  let caller: Awaited<ReturnType<typeof fx.proxy>>;
  let session: http2.ClientHttp2Session;

  beforeAll(async () => {
    good = await h2Server(ok);
    failing = await h2Server(unavailable);
    resetting = await h2Server(reset);
    early = await h2Server(unavailable, true);
    refusing = await refusingServer();
    const config =
      plainService("flaky", failing.port, good.port) +
      plainService("resets", resetting.port, good.port) +
      plainService("strict", failing.port, good.port, ", attempts: 0") +
      plainService("early", early.port, good.port) +
      // Every try answered 503 (both endpoints fail), each retry after up to 5 s or 1 s (full jitter), up to 10 of them.
      plainService("patient", failing.port, early.port, ", attempts: 10", "  timeouts: { request: 400ms }\n").replace("base: 5ms, max: 20ms", "base: 5s, max: 5s") +
      plainService("waiting", failing.port, early.port, ", attempts: 10").replace("base: 5ms, max: 20ms", "base: 1s, max: 1s") +
      plainService("refuses", refusing.port, good.port, ", attempts: 3").replace("consecutiveFailures: 1000", "consecutiveFailures: 3");
    caller = await fx.proxy("orders", fx.echo("orders").url, fx.config("orders-h2-retries", {}, config));
    session = http2.connect(`http://127.0.0.1:${caller.ports.outbound}`);
    session.on("error", () => {});
  });
  afterAll(() => {
    session?.close();
    for (const s of [good, failing, resetting, early, refusing]) s?.stop();
  });

  const many = <T,>(n: number, call: (i: number) => Promise<T>) => Promise.all(Array.from({ length: n }, (_, i) => call(i)));

  test("an idempotent request answered 503 goes to the other endpoint; the 503 never reaches the client", async () => {
    const before = failing.seen.length;
    const replies = await many(8, () => h2Call(session, "flaky", "GET"));
    expect(replies.map((r) => [r.status, r.headers["x-served-by"]])).toEqual(Array(8).fill([200, "good"]));
    expect(failing.seen.length - before).toBeGreaterThanOrEqual(4);
    expect(await metricValue(caller.ports.admin, "mesh_retries_total", { peer: "flaky" })).toBeGreaterThanOrEqual(4);
  });

  test("a POST answered 503 is not sent again; with an Idempotency-Key it is, its body replayed whole", async () => {
    const posts = await many(8, () => h2Call(session, "flaky", "POST", Buffer.from("charge")));
    const statuses = posts.map((r) => r.status).sort();
    expect(statuses).toEqual([200, 200, 200, 200, 503, 503, 503, 503]);
    expect(posts.filter((r) => r.status === 503).every((r) => r.body === "failing" && r.headers["x-served-by"] === "failing")).toBe(true);

    const body = Buffer.alloc(40_000, 7);
    const beforeGood = good.seen.length;
    const keyed = await many(6, (i) => h2Call(session, "flaky", "POST", body, { "idempotency-key": `k${i}` }));
    expect(keyed.map((r) => [r.status, r.body])).toEqual(Array(6).fill([200, "got 40000 bytes"]));
    expect(good.seen.slice(beforeGood).every((s) => s.body.equals(body))).toBe(true);
  });

  test("a stream reset before its response: a PUT goes again with its body, a POST gets 502 naming the reset", async () => {
    const body = Buffer.from("x".repeat(20_000));
    const puts = await many(6, () => h2Call(session, "resets", "PUT", body));
    expect(puts.map((r) => [r.status, r.body])).toEqual(Array(6).fill([200, "got 20000 bytes"]));
    const before = resetting.seen.length;
    const posts = await many(6, () => h2Call(session, "resets", "POST", Buffer.from("once")));
    const failed = posts.filter((r) => r.status !== 200);
    expect(failed.length).toBe(3);
    expect(failed.every((r) => r.status === 502 && r.headers["x-mesh-error"] === "upstream-reset")).toBe(true);
    // The POSTs that failed had reached the server: that is why they were not sent again.
    expect(resetting.seen.slice(before).map((s) => s.method)).toEqual(["POST", "POST", "POST"]);
  });

  test("a body longer than what is kept for a retry is not sent again", async () => {
    const body = Buffer.alloc(100 * 1024, 1);
    const puts = await many(4, () => h2Call(session, "resets", "PUT", body));
    expect(puts.map((r) => r.status).sort()).toEqual([200, 200, 502, 502]);
  });

  test("a 503 that comes while the request body is still being sent: the next try gets all of it, what came before and after", async () => {
    const beforeGood = good.seen.length;
    const replies = await many(4, async () => {
      const req = session.request({ ":method": "PUT", ":path": "/r", ":authority": "early" });
      const reply = new Promise<{ status: number; body: string }>((resolve) => {
        let status = 0;
        let body = "";
        req.on("response", (h) => (status = Number(h[":status"])));
        req.on("data", (d: Buffer) => (body += d));
        req.on("close", () => resolve({ status, body }));
        req.on("error", () => {});
      });
      req.write(Buffer.alloc(3000, 1));
      await Bun.sleep(150);
      req.end(Buffer.alloc(2000, 2));
      return reply;
    });
    expect(replies).toEqual(Array(4).fill({ status: 200, body: "got 5000 bytes" }));
    const expected = Buffer.concat([Buffer.alloc(3000, 1), Buffer.alloc(2000, 2)]);
    expect(good.seen.slice(beforeGood).map((s) => s.body.equals(expected))).toEqual([true, true, true, true]);
  });

  test("the request timeout covers the waits between tries", async () => {
    const started = performance.now();
    const reply = await h2Call(session, "patient", "GET");
    expect([reply.status, reply.headers["x-mesh-error"]]).toEqual([504, "timeout"]);
    expect(performance.now() - started).toBeGreaterThanOrEqual(390);
  });

  test("a client that leaves while a retry waits ends the call: no try is sent after", async () => {
    const tries = () => failing.seen.length + early.seen.length;
    const req = session.request({ ":method": "GET", ":path": "/r", ":authority": "waiting" });
    req.on("error", () => {});
    await Bun.sleep(100);
    req.close(http2.constants.NGHTTP2_CANCEL);
    await Bun.sleep(50);
    const atLeave = tries();
    // Past the longest wait (1 s) a retry would have had.
    await Bun.sleep(1200);
    expect(tries()).toBe(atLeave);
    expect(await metricValue(caller.ports.admin, "mesh_requests_total", { peer: "waiting", status: "4xx" })).toBe(1);
  });

  test("an endpoint that refuses every stream: each call goes on to the other, whatever its method, and the refuser is ejected", async () => {
    const posts = await many(6, () => h2Call(session, "refuses", "POST", Buffer.from("once")));
    expect(posts.map((r) => [r.status, r.headers["x-served-by"] ?? r.body])).toEqual(Array(6).fill([200, "good"]));
    // Refused streams count against their endpoint, as a 503 would: three in a row eject it.
    expect(await metricValue(caller.ports.admin, "mesh_outlier_ejections_total", { peer: "refuses" })).toBeGreaterThanOrEqual(1);
    // Ejected, it is sent nothing more.
    const refusedBefore = refusing.seen.length;
    const replies = await many(6, () => h2Call(session, "refuses", "GET"));
    expect(replies.map((r) => r.status)).toEqual(Array(6).fill(200));
    expect(refusing.seen.length).toBe(refusedBefore);
  });

  test("with retries off (attempts: 0) the 503 reaches the client", async () => {
    const replies = await many(6, () => h2Call(session, "strict", "GET"));
    expect(replies.map((r) => r.status).sort()).toEqual([200, 200, 200, 503, 503, 503]);
  });
});

describe("gRPC", () => {
  let goodSvc: GreeterService;
  let failingSvc: GreeterService;
  let caller: Awaited<ReturnType<typeof fx.proxy>>;

  /** Greeter's two sidecars, the failing one first; `grpcStatuses` in the policy's retries. */
  const greeter = (name: string, failingPort: number, goodPort: number, grpcStatuses: string) =>
    alternatingService(name, "  identity: greeter\n  ports: [{ name: grpc, port: 80, protocol: grpc }]", failingPort, goodPort, `grpcStatuses: [${grpcStatuses}], backoff: { base: 5ms, max: 20ms }`);

  beforeAll(async () => {
    goodSvc = await greeterService();
    failingSvc = await greeterService({ unavailable: true });
    const goodProxy = await fx.proxy("greeter", `http://127.0.0.1:${goodSvc.port}`);
    const failingProxy = await fx.proxy("greeter", `http://127.0.0.1:${failingSvc.port}`);
    const config = greeter("retried", failingProxy.ports.inbound, goodProxy.ports.inbound, "unavailable") + greeter("unretried", failingProxy.ports.inbound, goodProxy.ports.inbound, "");
    caller = await fx.proxy("orders", fx.echo("orders-grpc").url, fx.config("orders-grpc-retries", {}, config));
  });
  afterAll(async () => {
    await goodSvc?.stop();
    await failingSvc?.stop();
  });

  test("a call ended UNAVAILABLE, trailers-only, goes to the other endpoint when the policy lists it", async () => {
    const client = greeterClient(caller.ports.outbound, "retried");
    try {
      const before = failingSvc.calls.length;
      const results = await Promise.all(Array.from({ length: 8 }, (_, i) => unary<Greeting>(client, "hello", { name: `g${i}` })));
      expect(results.map((r) => r.value?.message ?? r.error?.code)).toEqual(Array.from({ length: 8 }, (_, i) => `hello g${i}`));
      expect(failingSvc.calls.length - before).toBeGreaterThanOrEqual(4);
      expect(await metricValue(caller.ports.admin, "mesh_retries_total", { peer: "retried" })).toBeGreaterThanOrEqual(4);
    } finally {
      client.close();
    }
  });

  test("unlisted, UNAVAILABLE reaches the client; a status not listed (NOT_FOUND) is never retried", async () => {
    const unretried = greeterClient(caller.ports.outbound, "unretried");
    const retried = greeterClient(caller.ports.outbound, "retried");
    try {
      const results = await Promise.all(Array.from({ length: 6 }, () => unary(unretried, "hello", { name: "u" })));
      expect(results.filter((r) => r.error?.code === grpc.status.UNAVAILABLE).length).toBe(3);
      const seen = goodSvc.calls.length + failingSvc.calls.length;
      const notFound = await Promise.all(Array.from({ length: 4 }, () => unary(retried, "fail", {})));
      expect(notFound.map((r) => r.error?.code)).toEqual(Array(4).fill(grpc.status.NOT_FOUND));
      expect(goodSvc.calls.length + failingSvc.calls.length - seen).toBe(4);
    } finally {
      unretried.close();
      retried.close();
    }
  });

  test("a stream that sent a message before UNAVAILABLE is not retried: the client sees both", async () => {
    const client = greeterClient(caller.ports.outbound, "retried");
    try {
      const outcomes = await Promise.all(
        Array.from({ length: 4 }, () =>
          new Promise<{ got: number[]; code: number }>((resolve) => {
            const got: number[] = [];
            const call = client.count({ to: 3 });
            call.on("data", (m: { n: number }) => got.push(m.n));
            call.on("status", (s: grpc.StatusObject) => resolve({ got, code: s.code }));
            call.on("error", () => {});
          }),
        ),
      );
      const sorted = outcomes.map((o) => JSON.stringify(o)).sort();
      expect(sorted).toEqual([
        JSON.stringify({ got: [1, 2, 3], code: grpc.status.OK }),
        JSON.stringify({ got: [1, 2, 3], code: grpc.status.OK }),
        JSON.stringify({ got: [1], code: grpc.status.UNAVAILABLE }),
        JSON.stringify({ got: [1], code: grpc.status.UNAVAILABLE }),
      ]);
    } finally {
      client.close();
    }
  });
});
