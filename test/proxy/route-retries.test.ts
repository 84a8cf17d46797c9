/**
 * An HTTPRoute rule's retries, through a real sidecar, against real servers outside the
 * mesh: each destination alternates a failing endpoint and a good one, the failing one
 * first, so every other call meets the failure. The backend's DestinationPolicy keeps its
 * defaults (503 retried, 500 and gRPC statuses not); the route's rules turn retries off
 * for one path, retry 500 on another, and a gRPC UNAVAILABLE on a third. Calls no rule
 * takes keep the policy's retries.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import http2, { type Http2Server, type ServerHttp2Stream } from "node:http2";
import { fixtureFor } from "../helpers/mesh-fixture.ts";
import { alternatingService, manifestIssues } from "../helpers/policies.ts";
import { callSettings } from "../../src/proxy/policy.ts";
import { defaultDestinationPolicy } from "../../src/config/kinds/destination-policy.ts";

const fx = fixtureFor("orders");
let caller: Awaited<ReturnType<typeof fx.proxy>>;
const h2Servers: Http2Server[] = [];
/** Tries each server received. */
const hits = { failing: 0, good: 0, failingH2: 0, goodH2: 0 };

/** The failing endpoints answer the status the request asks for (x-fail-with), 503 by default; a gRPC call, trailers-only UNAVAILABLE. */
const failWith = (asked: string | null | undefined) => Number(asked ?? 503);

async function h2Server(answer: (stream: ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => void): Promise<number> {
  const server = http2.createServer();
  server.on("stream", (stream: ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => {
    stream.resume();
    stream.on("error", () => {});
    stream.on("end", () => answer(stream, headers));
  });
  h2Servers.push(server);
  return new Promise<number>((resolve) => server.listen(0, "127.0.0.1", () => resolve((server.address() as { port: number }).port)));
}

const ROUTE = (service: string) => `---
apiVersion: mesh.dev/v1alpha1
kind: HTTPRoute
metadata: { name: ${service} }
spec:
  service: ${service}
  rules:
    - matches: [{ path: { prefix: /no-retry } }]
      backends: [{ service: ${service} }]
      retries: { attempts: 0 }
    - matches: [{ path: { prefix: /on-500 } }]
      backends: [{ service: ${service} }]
      retries: { statusCodes: [500] }
    - matches: [{ path: { prefix: /grpc-retried } }]
      backends: [{ service: ${service} }]
      retries: { grpcStatuses: [unavailable] }
`;

const service = (name: string, protocol: string, first: number, second: number) =>
  alternatingService(name, `  mtls: false\n  ports: [{ name: http, port: 80, protocol: ${protocol} }]`, first, second, "backoff: { base: 5ms, max: 10ms }");

beforeAll(async () => {
  const failing = fx.service((req) => (hits.failing++, new Response("failing", { status: failWith(req.headers.get("x-fail-with")) })));
  const good = fx.service(() => (hits.good++, new Response("good")));
  const failingH2 = await h2Server((stream, headers) => {
    hits.failingH2++;
    if (headers["content-type"] === "application/grpc") return stream.respond({ ":status": 200, "content-type": "application/grpc", "grpc-status": "14", "grpc-message": "down" }, { endStream: true });
    stream.respond({ ":status": failWith(headers["x-fail-with"] as string | undefined) });
    stream.end("failing");
  });
  const goodH2 = await h2Server((stream, headers) => {
    hits.goodH2++;
    if (headers["content-type"] !== "application/grpc") return void (stream.respond({ ":status": 200 }), stream.end("good"));
    stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
    stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
    stream.end(Buffer.from([0, 0, 0, 0, 0]));
  });
  const port = (s: { url: string }) => Number(new URL(s.url).port);
  const config = service("h1", "http", port(failing), port(good)) + ROUTE("h1") + service("h2", "http2", failingH2, goodH2) + ROUTE("h2");
  caller = await fx.proxy("orders", fx.echo("orders").url, fx.config("orders", {}, config));
});
afterAll(() => {
  for (const s of h2Servers) s.close();
});

/** `n` calls, one after another (so each pair meets both endpoints): their statuses, sorted. */
async function statuses(n: number, call: () => Promise<number>): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(await call());
  return out.sort();
}

describe("HTTP/1.1", () => {
  const get = (path: string, failWithStatus?: number) => async () => {
    const res = await fetch(`http://127.0.0.1:${caller.ports.outbound}${path}`, { headers: { host: "h1", ...(failWithStatus ? { "x-fail-with": String(failWithStatus) } : {}) } });
    await res.arrayBuffer();
    return res.status;
  };

  test("a call no rule takes keeps the backend's retries: 503 retried, 500 not", async () => {
    expect(await statuses(4, get("/x"))).toEqual([200, 200, 200, 200]);
    expect(await statuses(4, get("/x", 500))).toEqual([200, 200, 500, 500]);
  });

  test("a rule's attempts: 0 turns retries off for the calls it takes", async () => {
    const before = hits.failing + hits.good;
    expect(await statuses(4, get("/no-retry/x"))).toEqual([200, 200, 503, 503]);
    expect(hits.failing + hits.good - before).toBe(4);
  });

  test("a rule's statusCodes replace the backend's: 500 retried, 503 no longer", async () => {
    expect(await statuses(4, get("/on-500/x", 500))).toEqual([200, 200, 200, 200]);
    expect(await statuses(4, get("/on-500/x"))).toEqual([200, 200, 503, 503]);
  });
});

describe("HTTP/2 and gRPC", () => {
  let session: http2.ClientHttp2Session;
  beforeAll(() => {
    session = http2.connect(`http://127.0.0.1:${caller.ports.outbound}`);
    session.on("error", () => {});
  });
  afterAll(() => session?.close());

  const call = (path: string, extra: Record<string, string> = {}) => () =>
    new Promise<number>((resolve) => {
      const req = session.request({ ":method": extra["content-type"] ? "POST" : "GET", ":path": path, ":authority": "h2", ...extra }, { endStream: !extra["content-type"] });
      let status = 0;
      let grpcStatus: string | undefined;
      req.on("response", (h) => ((status = Number(h[":status"])), (grpcStatus = h["grpc-status"] as string | undefined)));
      req.on("trailers", (t) => (grpcStatus = t["grpc-status"] as string | undefined));
      req.on("error", () => {});
      req.on("close", () => resolve(grpcStatus === undefined ? status : 1000 + Number(grpcStatus)));
      req.resume();
      if (extra["content-type"]) req.end(Buffer.from([0, 0, 0, 0, 0]));
    });
  const grpc = { "content-type": "application/grpc", te: "trailers" };

  test("attempts: 0 and statusCodes over HTTP/2 as over HTTP/1.1", async () => {
    expect(await statuses(4, call("/x"))).toEqual([200, 200, 200, 200]);
    expect(await statuses(4, call("/no-retry/x"))).toEqual([200, 200, 503, 503]);
    expect(await statuses(4, call("/on-500/x", { "x-fail-with": "500" }))).toEqual([200, 200, 200, 200]);
    expect(await statuses(4, call("/x", { "x-fail-with": "500" }))).toEqual([200, 200, 500, 500]);
  });

  // 1000 + the gRPC status: 1000 is OK, 1014 UNAVAILABLE.
  test("a rule's grpcStatuses retry a trailers-only UNAVAILABLE; a call no rule takes is not retried on it", async () => {
    const before = hits.failingH2 + hits.goodH2;
    expect(await statuses(4, call("/grpc-retried/Svc/Do", grpc))).toEqual([1000, 1000, 1000, 1000]);
    expect(await statuses(4, call("/Svc/Do", grpc))).toEqual([1000, 1000, 1014, 1014]);
    expect(hits.failingH2 + hits.goodH2 - before).toBe(4 + 2 + 4);
  });
});

describe("config", () => {
  const rule = (retries: unknown) => ({ service: "a", rules: [{ backends: [{ service: "a" }], retries }] });

  test("a rule's retries: each field checked as the policy's, at least one given, backoff whole", () => {
    expect(manifestIssues("HTTPRoute", rule({ attempts: 3 }))).toEqual([]);
    expect(manifestIssues("HTTPRoute", rule({}))).toEqual(["spec.rules[0].retries: give attempts, retryOn, statusCodes, grpcStatuses or backoff"]);
    expect(manifestIssues("HTTPRoute", rule({ attempts: 11, statusCodes: [404], grpcStatuses: ["ok"], budget: {} }))).toEqual([
      "spec.rules[0].retries.attempts: expected integer ≤ 10",
      "spec.rules[0].retries.statusCodes[0]: expected integer ≥ 500",
      'spec.rules[0].retries.grpcStatuses[0]: expected one of cancelled, deadline-exceeded, internal, resource-exhausted, unavailable',
      'spec.rules[0].retries: unknown field "budget"',
    ]);
    expect(manifestIssues("HTTPRoute", rule({ backoff: { base: "1s" } }))).toEqual(["spec.rules[0].retries.backoff.max: must be at least base"]);
  });

  test("what a rule gives replaces the backend's field; the rest stay the backend's", () => {
    const policy = { ...defaultDestinationPolicy("a"), retries: { ...defaultDestinationPolicy("a").retries, attempts: 5, statusCodes: [503] } };
    const own = callSettings(policy);
    const routed = callSettings(policy, { retries: { statusCodes: [500, 502] }, timeouts: { backendRequest: 100 } });
    expect(routed.retryPolicy.attempts).toBe(5);
    expect(routed.retryPolicy.retryOn.statusCodes).toEqual([500, 502]);
    expect(own.retryPolicy.retryOn.statusCodes).toEqual([503]);
    expect([routed.timeoutMs, routed.perTryMs]).toEqual([own.timeoutMs, 100]);
    expect(callSettings(policy, { retries: { attempts: 0 } }).retryPolicy.attempts).toBe(0);
  });
});
