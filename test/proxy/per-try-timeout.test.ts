/**
 * One try's timeout (DestinationPolicy timeouts.perTry, HTTPRoute timeouts.backendRequest),
 * against real servers outside the mesh: each destination alternates a slow endpoint (600 ms
 * to its response head) and a fast one, the slow one first. An idempotent request whose try
 * outlives the timeout goes to the other endpoint; a POST gets 504; the request timeout
 * still bounds every try and wait together.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import http2, { type Http2Server } from "node:http2";
import { fixtureFor } from "../helpers/mesh-fixture.ts";
import { alternatingService, manifestIssues } from "../helpers/policies.ts";

const fx = fixtureFor("orders");
const SLOW_MS = 600;
let caller: Awaited<ReturnType<typeof fx.proxy>>;
const h2Servers: Http2Server[] = [];

/** An h2c server answering after `delayMs`; its requests counted. */
async function h2Server(name: string, delayMs: number) {
  const counted = { name, hits: 0, port: 0 };
  const server = http2.createServer((req, res) => {
    counted.hits++;
    req.resume();
    setTimeout(() => res.end(name), delayMs);
  });
  h2Servers.push(server);
  counted.port = await new Promise<number>((resolve) => server.listen(0, "127.0.0.1", () => resolve((server.address() as { port: number }).port)));
  return counted;
}

/** A Service outside the mesh: `first` then `second`, alternated, never ejected; `timeouts` in its policy. */
const service = (name: string, protocol: string, first: number, second: number, timeouts: string) =>
  alternatingService(name, `  mtls: false\n  ports: [{ name: http, port: 80, protocol: ${protocol} }]`, first, second, "backoff: { base: 5ms, max: 10ms }", `  timeouts: { ${timeouts} }\n`);

let slow: { hits: number };
let fast: { hits: number };
let slowH2: { hits: number };
let fastH2: { hits: number };

beforeAll(async () => {
  const slowSvc = fx.service(async () => (await Bun.sleep(SLOW_MS), new Response("slow")));
  const fastSvc = fx.service(() => new Response("fast"));
  slow = slowSvc;
  fast = fastSvc;
  const alsoSlow = fx.service(async () => (await Bun.sleep(SLOW_MS), new Response("slow too")));
  const [s, s2, f] = [slowSvc, alsoSlow, fastSvc].map((x) => Number(new URL(x.url).port)) as [number, number, number];
  const sh = await h2Server("slow", SLOW_MS);
  const fh = await h2Server("fast", 0);
  slowH2 = sh;
  fastH2 = fh;
  const route = `---
apiVersion: mesh.dev/v1alpha1
kind: HTTPRoute
metadata: { name: routed }
spec:
  service: routed
  rules: [{ backends: [{ service: routed }], timeouts: { backendRequest: 200ms } }]
`;
  const config = fx.config(
    "orders",
    {},
    service("h1", "http", s, f, "perTry: 200ms") +
      service("h1-both-slow", "http", s, s2, "perTry: 200ms, request: 500ms") +
      service("h2", "http2", sh.port, fh.port, "perTry: 200ms") +
      service("routed", "http", s, f, "request: 15s") +
      route,
  );
  caller = await fx.proxy("orders", fx.echo("orders").url, config);
});
afterAll(() => {
  for (const s of h2Servers) s.close();
});

const call = async (host: string, method = "GET") => {
  const started = performance.now();
  const res = await fetch(`http://127.0.0.1:${caller.ports.outbound}/x`, { method, headers: { host }, body: method === "POST" ? "pay" : undefined });
  return { status: res.status, body: await res.text(), error: res.headers.get("x-mesh-error"), ms: performance.now() - started };
};

describe("HTTP/1.1", () => {
  test("a GET whose try outlives timeouts.perTry goes to the other endpoint; every call answered before the slow one would", async () => {
    const before = { slow: slow.hits, fast: fast.hits };
    const results = [];
    for (let i = 0; i < 4; i++) results.push(await call("h1"));
    expect(results.map((r) => [r.status, r.body])).toEqual(Array(4).fill([200, "fast"]));
    expect(results.every((r) => r.ms < SLOW_MS)).toBe(true);
    expect([slow.hits - before.slow, fast.hits - before.fast]).toEqual([2, 4]);
  });

  test("a POST whose try outlives it gets 504, named as one try's timeout, and is not sent again", async () => {
    const before = fast.hits;
    const results = [await call("h1", "POST"), await call("h1", "POST")];
    const timedOut = results.find((r) => r.status !== 200)!;
    expect([timedOut.status, timedOut.error]).toEqual([504, "timeout"]);
    expect(timedOut.body).toContain("no response within 200 ms (one try's timeout)");
    expect(fast.hits - before).toBe(1);
  });

  test("the request timeout still bounds the tries together", async () => {
    const r = await call("h1-both-slow");
    expect([r.status, r.error]).toEqual([504, "timeout"]);
    expect(r.body).toContain("no response within 500 ms");
  });

  test("an HTTPRoute rule's timeouts.backendRequest sets it for the calls the rule takes", async () => {
    const results = [await call("routed"), await call("routed")];
    expect(results.map((r) => r.body)).toEqual(["fast", "fast"]);
  });
});

describe("HTTP/2", () => {
  test("the same: a GET retried past the slow endpoint, a POST answered 504", async () => {
    const session = http2.connect(`http://127.0.0.1:${caller.ports.outbound}`);
    session.on("error", () => {});
    const send = (method: string) =>
      new Promise<{ status: number; body: string; error: unknown }>((resolve) => {
        const req = session.request({ ":method": method, ":path": "/x", ":authority": "h2" });
        let status = 0;
        let body = "";
        let error: unknown;
        req.on("response", (h) => ((status = Number(h[":status"])), (error = h["x-mesh-error"])));
        req.on("data", (d: Buffer) => (body += d));
        req.on("close", () => resolve({ status, body, error }));
        req.on("error", () => {});
        req.end();
      });
    try {
      const before = fastH2.hits;
      const gets = [await send("GET"), await send("GET")];
      expect(gets.map((r) => [r.status, r.body])).toEqual([
        [200, "fast"],
        [200, "fast"],
      ]);
      const posts = [await send("POST"), await send("POST")];
      expect(posts.map((r) => [r.status, r.error]).sort()).toEqual([
        [200, undefined],
        [504, "timeout"],
      ]);
      expect(fastH2.hits - before).toBe(3);
      expect(slowH2.hits).toBeGreaterThanOrEqual(2);
    } finally {
      session.close();
    }
  });
});

describe("schema", () => {
  test("a rule's timeouts need one of the two, and backendRequest within request", () => {
    const rule = (timeouts: Record<string, unknown>) => ({ service: "p", rules: [{ backends: [{ service: "p" }], timeouts }] });
    expect(manifestIssues("HTTPRoute", rule({}))).toEqual(["spec.rules[0].timeouts: give request, backendRequest or both"]);
    expect(manifestIssues("HTTPRoute", rule({ request: "1s", backendRequest: "2s" }))).toEqual(["spec.rules[0].timeouts.backendRequest: must be at most request"]);
    expect(manifestIssues("HTTPRoute", rule({ request: "0s", backendRequest: "2s" }))).toEqual([]);
  });
});
