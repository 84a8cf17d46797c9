/**
 * An HTTPRoute rule's mirror, through real sidecars: orders calls api, and the rule's
 * calls are copied to api-v2 (behind its own sidecar, over mTLS), whose answers are
 * dropped. The copy is a shadow (Host "api-shadow"), carries the body up to 64 KiB (HTTP/1.1:
 * sent once the body is whole; HTTP/2: as it is sent on), and nothing of it reaches the
 * caller's call.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import http2 from "node:http2";
import { fixtureFor, metricValue } from "../helpers/mesh-fixture.ts";
import { h2Service, type H2Service } from "../helpers/h2-service.ts";
import { eventually } from "../helpers/wait.ts";
import { shadowHost } from "../../src/proxy/mirror.ts";

const fx = fixtureFor("orders", "api", "api-v2");
let caller: Awaited<ReturnType<typeof fx.proxy>>;
let h2Caller: Awaited<ReturnType<typeof fx.proxy>>;
let h2v2: H2Service;

/** What api-v2 received. */
const copies: { method: string; path: string; host: string | null; caller: string | null; routed: string | null; body: string }[] = [];

const ROUTE = `---
apiVersion: mesh.dev/v1alpha1
kind: Service
metadata: { name: api-v2 }
spec:
  ports: [{ name: http, port: 80 }]
  endpoints: [{ address: 127.0.0.1, port: V2_PORT }]
---
apiVersion: mesh.dev/v1alpha1
kind: HTTPRoute
metadata: { name: api-shadowing }
spec:
  service: api
  rules:
    - matches: [{ path: { prefix: /mirrored } }]
      backends: [{ service: api }]
      mirror: { service: api-v2 }
      requestHeaders: { set: [{ name: x-routed, value: "yes" }] }
    - matches: [{ path: { prefix: /never } }]
      backends: [{ service: api }]
      mirror: { service: api-v2, percent: 0 }
`;

const mirrored = (outcome: string, admin = caller.ports.admin) => metricValue(admin, "mesh_mirrored_total", { peer: "api-v2", outcome });

beforeAll(async () => {
  const api = await fx.proxy("api", fx.echo("api").url);
  const v2Service = fx.service(async (req) => {
    const url = new URL(req.url);
    copies.push({ method: req.method, path: url.pathname, host: req.headers.get("host"), caller: req.headers.get("x-mesh-client-id"), routed: req.headers.get("x-routed"), body: await req.text() });
    if (url.pathname.endsWith("/slow")) await Bun.sleep(1500);
    return new Response("from v2", { status: url.pathname.endsWith("/fails") ? 500 : 200 });
  });
  const v2 = await fx.proxy("api-v2", v2Service.url);
  caller = await fx.proxy("orders", fx.echo("orders").url, fx.config("orders", { api: [api.ports.inbound] }, ROUTE.replace("V2_PORT", String(v2.ports.inbound))));

  const apiH2 = await fx.proxy("api", `http://127.0.0.1:${(await h2Service("api-h2")).port}`);
  h2v2 = await h2Service("api-v2-h2");
  const v2H2 = await fx.proxy("api-v2", `http://127.0.0.1:${h2v2.port}`);
  h2Caller = await fx.proxy("orders", fx.echo("orders-h2").url, fx.config("orders-h2", { api: [apiH2.ports.inbound] }, ROUTE.replace("V2_PORT", String(v2H2.ports.inbound))));
});
afterAll(() => h2v2?.stop());

/** A body sent chunked, in these pieces, 100 ms apart. */
const inPieces = (pieces: string[]) =>
  new ReadableStream<Uint8Array>({
    async start(c) {
      for (const [i, piece] of pieces.entries()) {
        if (i > 0) await Bun.sleep(100);
        c.enqueue(new TextEncoder().encode(piece));
      }
      c.close();
    },
  });

/**
 * A POST with a Content-Length for `declared` bytes (default: the pieces' total), its body
 * written in these pieces 100 ms apart; what came back, once the connection closed.
 */
async function rawPost(path: string, pieces: string[], declared = pieces.join("").length): Promise<string> {
  let received = "";
  const closed = Promise.withResolvers<void>();
  const socket = await Bun.connect({
    hostname: "127.0.0.1",
    port: caller.ports.outbound,
    socket: { data: (_s, d) => void (received += d.toString()), close: () => closed.resolve(), error: () => closed.resolve() },
  });
  socket.write(`POST ${path} HTTP/1.1\r\nhost: api\r\ncontent-length: ${declared}\r\nconnection: close\r\n\r\n`);
  for (const piece of pieces) {
    await Bun.sleep(100);
    socket.write(piece);
  }
  // A body declared longer than it is: the client gives up on it.
  if (pieces.join("").length < declared) socket.end();
  await Promise.race([closed.promise, Bun.sleep(5000)]);
  return received;
}

const call = (path: string, init: RequestInit = {}) => fetch(`http://127.0.0.1:${caller.ports.outbound}${path}`, { ...init, headers: { host: "api", ...(init.headers as Record<string, string>) } });
const copiesOf = (path: string) => copies.filter((c) => c.path === path);

describe("HTTP/1.1", () => {
  test("a call the rule takes is answered by api; a shadow copy, from orders, with the rule's header changes, reaches api-v2", async () => {
    const res = await call("/mirrored/items?page=2");
    expect([res.status, ((await res.json()) as { service: string }).service]).toEqual([200, "api"]);
    expect(await eventually(() => copiesOf("/mirrored/items").length === 1)).toBe(true);
    expect(copiesOf("/mirrored/items")[0]).toEqual({ method: "GET", path: "/mirrored/items", host: "api-shadow", caller: "spiffe://mesh.local/ns/default/sa/orders", routed: "yes", body: "" });
    expect(await eventually(async () => (await mirrored("2xx")) >= 1)).toBe(true);
  });

  test("a body that came whole with its head is copied; one still coming is copied once whole, the call never waiting for it", async () => {
    expect((await call("/mirrored/pay", { method: "POST", body: "amount=5" })).status).toBe(200);
    expect(await eventually(() => copiesOf("/mirrored/pay").length === 1)).toBe(true);
    expect(copiesOf("/mirrored/pay")[0]!.body).toBe("amount=5");

    // Chunked, in two pieces 100 ms apart.
    const res = await call("/mirrored/upload", { method: "POST", body: inPieces(["part one;", "part two"]) });
    expect([res.status, ((await res.json()) as { body: string }).body]).toEqual([200, "part one;part two"]);
    expect(await eventually(() => copiesOf("/mirrored/upload").length === 1)).toBe(true);
    expect(copiesOf("/mirrored/upload")[0]!.body).toBe("part one;part two");
  });

  test("a Content-Length body in pieces is copied whole; one over 64 KiB is not copied (skipped), the call going on whole", async () => {
    const sent = await rawPost("/mirrored/sized", ["0123456789".repeat(3000), "abcdefghij".repeat(3000)]);
    expect(sent).toContain("HTTP/1.1 200");
    expect(await eventually(() => copiesOf("/mirrored/sized").length === 1)).toBe(true);
    expect(copiesOf("/mirrored/sized")[0]!.body).toBe("0123456789".repeat(3000) + "abcdefghij".repeat(3000));

    const skippedBefore = await mirrored("skipped");
    const big = await call("/mirrored/big", { method: "POST", body: inPieces(["x".repeat(40_000), "y".repeat(40_000)]) });
    expect(((await big.json()) as { body: string }).body.length).toBe(80_000);
    expect(await eventually(async () => (await mirrored("skipped")) === skippedBefore + 1)).toBe(true);
    expect(copiesOf("/mirrored/big")).toEqual([]);
  });

  test("a body cut short by its client is never copied as if whole", async () => {
    const skippedBefore = await mirrored("skipped");
    await rawPost("/mirrored/cut", ["only the first half"], 200);
    expect(await eventually(async () => (await mirrored("skipped")) === skippedBefore + 1)).toBe(true);
    await Bun.sleep(150);
    expect(copiesOf("/mirrored/cut")).toEqual([]);
  });

  test("the copy's failure or slowness reaches nothing of the call: it is only counted", async () => {
    const failedBefore = await mirrored("5xx");
    const started = performance.now();
    const [slow, fails] = await Promise.all([call("/mirrored/slow"), call("/mirrored/fails")]);
    expect([slow.status, fails.status]).toEqual([200, 200]);
    expect(performance.now() - started).toBeLessThan(1000);
    expect(await eventually(async () => (await mirrored("5xx")) === failedBefore + 1)).toBe(true);
  });

  test("percent 0 copies nothing; calls no rule takes are not copied", async () => {
    for (const path of ["/never/x", "/plain/x"]) expect((await call(path)).status).toBe(200);
    await Bun.sleep(150);
    expect([...copiesOf("/never/x"), ...copiesOf("/plain/x")]).toEqual([]);
  });
});

describe("HTTP/2", () => {
  const post = (session: http2.ClientHttp2Session, path: string, body: Buffer) =>
    new Promise<number>((resolve) => {
      const req = session.request({ ":method": "POST", ":path": path, ":authority": "api" });
      let status = 0;
      req.on("response", (h) => (status = Number(h[":status"])));
      req.on("error", () => {});
      req.on("close", () => resolve(status));
      req.resume();
      req.end(body);
    });

  test("a stream's body is copied as it is sent on; past 64 KiB the copy is reset, the call goes on whole", async () => {
    const session = http2.connect(`http://127.0.0.1:${h2Caller.ports.outbound}`);
    session.on("error", () => {});
    try {
      expect(await post(session, "/mirrored/small", Buffer.from("small body"))).toBe(200);
      expect(await eventually(() => h2v2.seen.some((s) => s.path === "/mirrored/small"))).toBe(true);
      expect(h2v2.seen.find((s) => s.path === "/mirrored/small")).toMatchObject({ authority: "api-shadow", body: "small body", caller: "spiffe://mesh.local/ns/default/sa/orders", headers: { "x-routed": "yes" } });

      const resetBefore = await mirrored("reset", h2Caller.ports.admin);
      expect(await post(session, "/mirrored/large", Buffer.alloc(100 * 1024, 97))).toBe(200);
      expect(await eventually(async () => (await mirrored("reset", h2Caller.ports.admin)) === resetBefore + 1)).toBe(true);
      // The mirror never took a cut body for a whole one.
      expect(h2v2.seen.some((s) => s.path === "/mirrored/large")).toBe(false);
    } finally {
      session.close();
    }
  });
});

test("the shadow's host: -shadow after the name, before any port", () => {
  expect(["api", "api:8080", "api.shop.svc.cluster.local", "[fd00::1]:80"].map(shadowHost)).toEqual(["api-shadow", "api-shadow:8080", "api.shop.svc.cluster.local-shadow", "[fd00::1]-shadow:80"]);
});
