/**
 * An HTTPRoute rule's requestHeaders, applied by the caller's sidecar to the requests the
 * rule takes, over HTTP/1.1, HTTP/2 and WebSocket upgrades, through real sidecars: set
 * replaces every copy, add keeps the request's own, remove takes every spelling; a
 * request no rule takes leaves as it came.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import http2 from "node:http2";
import { fixtureFor } from "../helpers/mesh-fixture.ts";
import { h2Service, type H2Service } from "../helpers/h2-service.ts";
import { rawExchange } from "../helpers/raw-http.ts";

const fx = fixtureFor("orders", "api");
let caller: Awaited<ReturnType<typeof fx.proxy>>;
let h2: H2Service;
let h2Caller: Awaited<ReturnType<typeof fx.proxy>>;
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
`;

/** The headers the service saw, as JSON. */
const seen = (req: Request) => Response.json(Object.fromEntries([...req.headers].filter(([n]) => n.startsWith("x-") && !n.startsWith("x-mesh"))));

beforeAll(async () => {
  const api = await fx.proxy("api", fx.service(seen).url);
  caller = await fx.proxy("orders", fx.echo("orders").url, fx.config("orders", { api: [api.ports.inbound] }, ROUTE("api")));

  h2 = await h2Service("api-h2");
  const apiH2 = await fx.proxy("api", `http://127.0.0.1:${h2.port}`);
  h2Caller = await fx.proxy("orders", fx.echo("orders-h2").url, fx.config("orders-h2", { api: [apiH2.ports.inbound] }, ROUTE("api")));

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
