/**
 * A gRPC call's grpc-timeout, held by the caller's sidecar over the whole call: against
 * real h2c services outside the mesh, with a raw HTTP/2 client that keeps no deadline of
 * its own (a gRPC library would cut the call itself, hiding what the proxy does).
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import http2, { type IncomingHttpHeaders, type ServerHttp2Stream } from "node:http2";
import { fixtureFor } from "../helpers/mesh-fixture.ts";
import { alternatingService } from "../helpers/policies.ts";
import { grpcTimeoutMs, grpcTimeoutValue } from "../../src/proxy/h2/grpc-deadline.ts";

const fx = fixtureFor("orders");
const servers: http2.Http2Server[] = [];
let caller: Awaited<ReturnType<typeof fx.proxy>>;
let session: http2.ClientHttp2Session;

/** What a server saw of each call: its grpc-timeout, and whether its stream was cut before it answered in full. */
interface Seen {
  grpcTimeout: string | undefined;
  cut: boolean;
}

async function h2Server(answer: (stream: ServerHttp2Stream, seen: Seen) => void): Promise<{ port: number; seen: Seen[] }> {
  const seen: Seen[] = [];
  const server = http2.createServer();
  server.on("stream", (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => {
    const s: Seen = { grpcTimeout: headers["grpc-timeout"] as string | undefined, cut: false };
    seen.push(s);
    stream.on("aborted", () => (s.cut = true));
    stream.on("error", () => (s.cut = true));
    stream.resume();
    answer(stream, s);
  });
  servers.push(server);
  const port = await new Promise<number>((resolve) => server.listen(0, "127.0.0.1", () => resolve((server.address() as { port: number }).port)));
  return { port, seen };
}

const MESSAGE = Buffer.from([0, 0, 0, 0, 2, 8, 1]);
const ok = (stream: ServerHttp2Stream) => {
  stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
  stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
  stream.end(MESSAGE);
};

let hang: Awaited<ReturnType<typeof h2Server>>;
let unavailable: Awaited<ReturnType<typeof h2Server>>;
let good: Awaited<ReturnType<typeof h2Server>>;
let streams: Awaited<ReturnType<typeof h2Server>>;

const plain = (name: string, ports: number[], retries = "") =>
  alternatingService(name, "  mtls: false\n  ports: [{ name: grpc, port: 80, protocol: grpc }]", ports[0]!, ports[1] ?? ports[0]!, `backoff: { base: 5ms, max: 10ms }${retries}`).replace(
    /endpoints: \[.*\]/,
    `endpoints: [${[...new Set(ports)].map((p) => `{ address: 127.0.0.1, port: ${p} }`).join(", ")}]`,
  );

beforeAll(async () => {
  hang = await h2Server(() => {});
  unavailable = await h2Server((stream) => setTimeout(() => !stream.destroyed && stream.respond({ ":status": 200, "content-type": "application/grpc", "grpc-status": "14" }, { endStream: true }), 100));
  good = await h2Server(ok);
  // Headers and one message at once, then nothing more.
  streams = await h2Server((stream) => {
    stream.respond({ ":status": 200, "content-type": "application/grpc" });
    stream.write(MESSAGE);
  });
  const config = plain("hang", [hang.port]) + plain("flaky", [unavailable.port, good.port], ", grpcStatuses: [unavailable]") + plain("streams", [streams.port]);
  caller = await fx.proxy("orders", fx.echo("orders").url, fx.config("orders", {}, config));
  session = http2.connect(`http://127.0.0.1:${caller.ports.outbound}`);
  session.on("error", () => {});
});
afterAll(() => {
  session?.close();
  for (const s of servers) s.close();
});

interface Outcome {
  status: number;
  grpcStatus: string | undefined;
  error: string | undefined;
  /** RST_STREAM's code when the stream was reset, else 0. */
  reset: number;
  messages: number;
  ms: number;
}

function call(authority: string, grpcTimeout: string | undefined): Promise<Outcome> {
  const started = performance.now();
  return new Promise((resolve) => {
    const req = session.request({ ":method": "POST", ":path": "/pkg.Svc/Do", ":authority": authority, "content-type": "application/grpc", te: "trailers", ...(grpcTimeout && { "grpc-timeout": grpcTimeout }) });
    const out: Outcome = { status: 0, grpcStatus: undefined, error: undefined, reset: 0, messages: 0, ms: 0 };
    req.on("response", (h) => ((out.status = Number(h[":status"])), (out.grpcStatus = h["grpc-status"] as string | undefined), (out.error = h["x-mesh-error"] as string | undefined)));
    req.on("trailers", (t) => (out.grpcStatus = t["grpc-status"] as string | undefined));
    req.on("data", () => out.messages++);
    req.on("error", () => {});
    req.on("close", () => resolve({ ...out, reset: req.rstCode === http2.constants.NGHTTP2_NO_ERROR ? 0 : req.rstCode ?? 0, ms: performance.now() - started }));
    req.end(MESSAGE);
  });
}

test("grpc-timeout parses as the gRPC spec writes it; anything else is no deadline", () => {
  expect(["1H", "2M", "3S", "250m", "1500u", "2n", "99999999m"].map((v) => grpcTimeoutMs(v))).toEqual([3_600_000, 120_000, 3000, 250, 2, 1, 99_999_999]);
  expect(["", "5", "1.5S", "123456789m", "-1S", "5s", "99999999H", undefined].map((v) => grpcTimeoutMs(v))).toEqual(Array(8).fill(undefined));
  expect([grpcTimeoutValue(0.2), grpcTimeoutValue(1234.5), grpcTimeoutValue(200_000_000)]).toEqual(["1m", "1235m", "200000S"]);
});

test("a service that never answers: DEADLINE_EXCEEDED at the deadline, named a timeout, and the service's stream cancelled", async () => {
  const before = hang.seen.length;
  const r = await call("hang", "300m");
  expect([r.status, r.grpcStatus, r.error]).toEqual([200, "4", "timeout"]);
  expect(r.ms).toBeGreaterThanOrEqual(290);
  expect(hang.seen.slice(before).map((s) => s.grpcTimeout)).toEqual(["300m"]);
  await Bun.sleep(100);
  expect(hang.seen.at(-1)!.cut).toBe(true);
});

test("a retry is told the time left, not the time first given", async () => {
  const before = good.seen.length;
  const r = await call("flaky", "5S");
  expect([r.status, r.grpcStatus]).toEqual([200, "0"]);
  const left = good.seen.slice(before).map((s) => grpcTimeoutMs(s.grpcTimeout)!);
  expect(left).toHaveLength(1);
  // The first try took 100 ms to fail: what is left is below 4.9 s, and far above nothing.
  expect(left[0]!).toBeLessThanOrEqual(4900);
  expect(left[0]!).toBeGreaterThan(3000);
});

test("a response still coming at the deadline is reset, never ended as if whole", async () => {
  const r = await call("streams", "300m");
  expect([r.status, r.messages, r.grpcStatus]).toEqual([200, 1, undefined]);
  expect(r.reset).not.toBe(0);
  expect(r.ms).toBeGreaterThanOrEqual(290);
});

test("without grpc-timeout, or with one that is not well formed, no deadline is held", async () => {
  for (const value of [undefined, "soon"]) {
    const before = hang.seen.length;
    const pending = call("hang", value);
    const raced = await Promise.race([pending.then(() => "answered"), Bun.sleep(600).then(() => "still waiting")]);
    expect(raced).toBe("still waiting");
    expect(hang.seen.length).toBe(before + 1);
  }
});
