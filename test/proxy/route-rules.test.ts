/**
 * What an HTTPRoute rule does to the requests it takes, besides choosing their backend,
 * through real sidecars: its requestHeaders, over HTTP/1.1, HTTP/2 and WebSocket upgrades
 * (set replaces every copy, add keeps the request's own, remove takes every spelling; a
 * request no rule takes leaves as it came), and its timeouts.request, which replaces the
 * backend's DestinationPolicy timeout.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import http2 from "node:http2";
import { fixtureFor, metricValue } from "../helpers/mesh-fixture.ts";
import { h2Service, type H2Service } from "../helpers/h2-service.ts";
import { rawExchange } from "../helpers/raw-http.ts";

const fx = fixtureFor("orders", "api");
let caller: Awaited<ReturnType<typeof fx.proxy>>;
let apiHits: () => number;
let h2: H2Service;
let h2Caller: Awaited<ReturnType<typeof fx.proxy>>;
let slowH2: http2.Http2Server;
let slowH2Caller: Awaited<ReturnType<typeof fx.proxy>>;
/** The headers of each upgrade request the WebSocket service received. */
const upgrades: Record<string, string>[] = [];
let ws: ReturnType<typeof Bun.serve>;

const ROUTE = (service: string) => `---
apiVersion: mesh.dev/v1alpha1
kind: HTTPRoute
metadata: { name: ${service}-headers }
spec:
  service: ${service}
  rules:
    - matches: [{ path: { prefix: /v2 } }]
      backends: [{ service: ${service} }]
      requestHeaders:
        set: [{ name: x-version, value: "2" }]
        add: [{ name: x-tag, value: routed }]
        remove: [x-debug]
    - matches: [{ path: { prefix: /slow } }]
      backends: [{ service: ${service} }]
      timeouts: { request: 200ms }
    - matches: [{ path: { prefix: /teapot } }]
      backends: [{ service: ${service} }]
      fault: { abort: { status: 418 } }
    - matches: [{ path: { prefix: /late } }]
      backends: [{ service: ${service} }]
      fault: { delay: { fixed: 400ms } }
`;

/** The headers the service saw, as JSON; /slow... paths after 600 ms. */
const seen = async (req: Request) => {
  if (new URL(req.url).pathname.startsWith("/slow")) await Bun.sleep(600);
  return Response.json(Object.fromEntries([...req.headers].filter(([n]) => n.startsWith("x-") && !n.startsWith("x-mesh"))));
};

beforeAll(async () => {
  const service = fx.service(seen);
  apiHits = () => service.hits;
  const api = await fx.proxy("api", service.url);
  caller = await fx.proxy("orders", fx.echo("orders").url, fx.config("orders", { api: [api.ports.inbound] }, ROUTE("api")));

  h2 = await h2Service("api-h2");
  const apiH2 = await fx.proxy("api", `http://127.0.0.1:${h2.port}`);
  h2Caller = await fx.proxy("orders", fx.echo("orders-h2").url, fx.config("orders-h2", { api: [apiH2.ports.inbound] }, ROUTE("api")));

  // An h2c service that answers after 600 ms.
  slowH2 = http2.createServer((req, res) => void setTimeout(() => res.end("late"), 600));
  const slowPort = await new Promise<number>((resolve) => slowH2.listen(0, "127.0.0.1", () => resolve((slowH2.address() as { port: number }).port)));
  const apiSlowH2 = await fx.proxy("api", `http://127.0.0.1:${slowPort}`);
  slowH2Caller = await fx.proxy("orders", fx.echo("orders-slow-h2").url, fx.config("orders-slow-h2", { api: [apiSlowH2.ports.inbound] }, ROUTE("api")));

  ws = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    fetch(req, server) {
      upgrades.push(Object.fromEntries([...req.headers].filter(([n]) => n.startsWith("x-") && !n.startsWith("x-mesh"))));
      return server.upgrade(req, { data: undefined }) ? undefined : new Response("not an upgrade", { status: 400 });
    },
    websocket: { message: (s, m) => void s.send(m) },
  });
});
afterAll(() => {
  h2?.stop();
  slowH2?.close();
  ws?.stop(true);
});

describe("HTTP/1.1", () => {
  test("a request the rule takes: set replaces, add keeps the request's own, remove takes every spelling", async () => {
    const raw = ["GET /v2/items HTTP/1.1", "Host: api", "X-Version: 1", "x-version: 0", "X-Tag: mine", "X-Debug: yes", "x_debug: yes", "X-Keep: kept", "Connection: close", "", ""].join("\r\n");
    const res = await rawExchange(raw, { port: caller.ports.outbound });
    expect(res.statuses).toEqual([200]);
    expect(JSON.parse(res.text.slice(res.text.indexOf("\r\n\r\n") + 4))).toEqual({ "x-version": "2", "x-tag": "mine, routed", "x-keep": "kept" });
  });

  test("a request no rule takes leaves as it came", async () => {
    const res = await fetch(`http://127.0.0.1:${caller.ports.outbound}/v1/items`, { headers: { host: "api", "x-version": "1", "x-debug": "yes" } });
    expect(await res.json()).toEqual({ "x-version": "1", "x-debug": "yes" });
  });
});

describe("HTTP/2", () => {
  test("the same changes on a stream the rule takes, and none on one it does not", async () => {
    const session = http2.connect(`http://127.0.0.1:${h2Caller.ports.outbound}`);
    session.on("error", () => {});
    const call = (path: string) =>
      new Promise<number>((resolve) => {
        const req = session.request({ ":path": path, ":authority": "api", "x-version": "1", "x-tag": "mine", "x-debug": "yes", x_debug: "yes" });
        req.on("response", (h) => resolve(Number(h[":status"])));
        req.on("error", () => resolve(0));
        req.resume();
        req.end();
      });
    try {
      expect([await call("/v2/items"), await call("/v1/items")]).toEqual([200, 200]);
    } finally {
      session.close();
    }
    const headersOf = (path: string) => {
      const h = h2.seen.find((s) => s.path === path)!.headers;
      return { version: h["x-version"], tag: h["x-tag"], debug: h["x-debug"] ?? h["x_debug"] };
    };
    expect(headersOf("/v2/items")).toEqual({ version: "2", tag: "mine, routed", debug: undefined });
    expect(headersOf("/v1/items")).toEqual({ version: "1", tag: "mine", debug: "yes" });
  });
});

describe("WebSocket", () => {
  test("an upgrade the rule takes carries the changes to the service", async () => {
    const wsApi = await fx.proxy("api", ws.url.origin);
    const wsCaller = await fx.proxy("orders", fx.echo("orders-ws").url, fx.config("orders-ws", { api: [wsApi.ports.inbound] }, ROUTE("api")));
    const raw = ["GET /v2/socket HTTP/1.1", "Host: api", "Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13", "X-Version: 1", "X-Debug: yes", "", ""].join("\r\n");
    const res = await rawExchange(raw, { port: wsCaller.ports.outbound, quietMs: 200 });
    expect(res.statuses).toEqual([101]);
    expect(upgrades.at(-1)).toEqual({ "x-version": "2", "x-tag": "routed" });
  });
});

describe("timeouts", () => {
  test("a rule's timeouts.request replaces the backend's: 504 past it; other calls keep the policy's", async () => {
    const slow = await fetch(`http://127.0.0.1:${caller.ports.outbound}/slow/report`, { headers: { host: "api" } });
    expect([slow.status, slow.headers.get("x-mesh-error")]).toEqual([504, "timeout"]);
    expect(await slow.text()).toContain("no response within 200 ms");
    // /slowly is not under /slow: the DestinationPolicy's 15 s applies.
    const other = await fetch(`http://127.0.0.1:${caller.ports.outbound}/slowly`, { headers: { host: "api" } });
    expect(other.status).toBe(200);
  });

  test("over HTTP/2 too", async () => {
    const session = http2.connect(`http://127.0.0.1:${slowH2Caller.ports.outbound}`);
    session.on("error", () => {});
    const call = (path: string) =>
      new Promise<[number, unknown]>((resolve) => {
        const req = session.request({ ":path": path, ":authority": "api" });
        req.on("response", (h) => resolve([Number(h[":status"]), h["x-mesh-error"]]));
        req.on("error", () => resolve([0, undefined]));
        req.resume();
        req.end();
      });
    try {
      expect(await call("/slow/report")).toEqual([504, "timeout"]);
      expect(await call("/slowly")).toEqual([200, undefined]);
    } finally {
      session.close();
    }
  });
});

describe("fault injection", () => {
  test("an abort answers with its status and never sends the call; a delay holds it, then sends it", async () => {
    const before = apiHits();
    const aborted = await fetch(`http://127.0.0.1:${caller.ports.outbound}/teapot`, { headers: { host: "api" } });
    expect([aborted.status, aborted.headers.get("x-mesh-error")]).toEqual([418, "fault"]);
    expect(await aborted.text()).toContain("aborted by HTTPRoute default/api-headers's fault injection");
    expect(apiHits()).toBe(before);
    const started = performance.now();
    const late = await fetch(`http://127.0.0.1:${caller.ports.outbound}/late`, { headers: { host: "api" } });
    expect(late.status).toBe(200);
    expect(performance.now() - started).toBeGreaterThanOrEqual(390);
    expect(apiHits()).toBe(before + 1);
  });

  test("a client that leaves while its call is held: nothing is sent, and it is counted as gone", async () => {
    const before = apiHits();
    const gone = await metricValue(caller.ports.admin, "mesh_requests_total", { peer: "api", status: "4xx" });
    const raw = await rawExchange("GET /late HTTP/1.1\r\nHost: api\r\n\r\n", { port: caller.ports.outbound, timeoutMs: 100 });
    expect(raw.statuses).toEqual([]);
    await Bun.sleep(600);
    expect(apiHits()).toBe(before);
    expect(await metricValue(caller.ports.admin, "mesh_requests_total", { peer: "api", status: "4xx" })).toBe(gone + 1);
  });

  test("over HTTP/2: an abort answers (a gRPC call with the gRPC status its HTTP status maps to); a delayed POST is sent whole after its delay", async () => {
    const session = http2.connect(`http://127.0.0.1:${h2Caller.ports.outbound}`);
    session.on("error", () => {});
    const call = (path: string, extra: Record<string, string> = {}, body?: string) =>
      new Promise<Record<string, unknown>>((resolve) => {
        const req = session.request({ ":method": "POST", ":path": path, ":authority": "api", ...extra });
        req.on("response", (h) => resolve(h));
        req.on("error", () => resolve({}));
        req.resume();
        req.end(body);
      });
    try {
      const seenBefore = h2.seen.length;
      const teapot = await call("/teapot");
      expect([teapot[":status"], teapot["x-mesh-error"]]).toEqual([418, "fault"]);
      const grpcAbort = await call("/teapot/grpc", { "content-type": "application/grpc", te: "trailers" });
      expect([grpcAbort[":status"], grpcAbort["grpc-status"]]).toEqual([200, "2"]);
      expect(h2.seen.length).toBe(seenBefore);
      const started = performance.now();
      expect((await call("/late/h2", {}, "a body"))[":status"]).toBe(200);
      expect(performance.now() - started).toBeGreaterThanOrEqual(390);
      expect(h2.seen.at(-1)).toMatchObject({ path: "/late/h2", body: "a body" });
    } finally {
      session.close();
    }
  });
});

