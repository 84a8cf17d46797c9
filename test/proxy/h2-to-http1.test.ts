/**
 * HTTP/2 callers and an HTTP/1.1 service: when a Service declares the port its sidecar's
 * --upstream listens on `protocol: http`, the inbound sidecar translates each HTTP/2 call
 * into an HTTP/1.1 request (Bun.serve speaks no cleartext HTTP/2, so every answer here
 * proves the translation), and the response back into HEADERS and DATA. Driven by
 * node:http2's client and by curl --http2-prior-knowledge through the sidecar pair.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import http2, { type IncomingHttpHeaders } from "node:http2";
import { fixtureFor, metricValue, serviceDoc, type EchoService } from "../helpers/mesh-fixture.ts";
import { rawServer, type RawServer } from "../helpers/raw-h1-server.ts";
import { greeterClient, grpc, unary } from "../helpers/grpc.ts";

const fx = fixtureFor("web", "api", "legacy", "gone");
type Proxy = Awaited<ReturnType<typeof fx.proxy>>;
let api: EchoService;
let legacy: RawServer;
let apiSidecar: Proxy;
let caller: Proxy;
/** Requests the service saw being given up by their client (the connection closed under them). */
const abandoned: string[] = [];
/** The length of each body the service read, by path. */
const bodies: [string, number][] = [];
const bodiesAt = (path: string) => bodies.filter(([p]) => p === path).map(([, n]) => n);

beforeAll(async () => {
  api = fx.service(async (req) => {
    const url = new URL(req.url);
    if (url.pathname === "/big") return new Response(new Uint8Array(8 * 1024 * 1024).fill(97));
    if (url.pathname === "/cookies")
      return new Response("ok", { headers: [["set-cookie", "a=1; Path=/"], ["set-cookie", "b=2; Path=/"], ["connection", "x-private"], ["x-private", "secret"], ["x-kept", "yes"]] });
    if (url.pathname === "/silent") {
      req.signal.addEventListener("abort", () => abandoned.push(url.pathname));
      return new Promise<Response>(() => {});
    }
    if (url.pathname === "/slow") {
      req.signal.addEventListener("abort", () => abandoned.push(url.pathname));
      const stream = new ReadableStream({
        async pull(c) {
          await Bun.sleep(50);
          c.enqueue(new TextEncoder().encode("tick\n"));
        },
      });
      return new Response(stream);
    }
    const body = req.body ? Buffer.from(await req.arrayBuffer()) : Buffer.alloc(0);
    bodies.push([url.pathname, body.byteLength]);
    return Response.json({
      method: req.method,
      path: url.pathname + url.search,
      host: req.headers.get("host"),
      caller: req.headers.get("x-mesh-client-id"),
      cookie: req.headers.get("cookie"),
      contentLength: req.headers.get("content-length"),
      chunked: req.headers.get("transfer-encoding"),
      te: req.headers.get("te"),
      bytes: body.byteLength,
      sum: body.reduce((a, b) => (a + b) % 65521, 0),
    });
  });
  // Declares a length it never finishes, then closes: a body cut short.
  legacy = rawServer((r) => {
    r.reply("HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\npartial");
    setTimeout(() => r.destroy(), 50);
  });
  const apiPort = Number(new URL(api.url).port);
  apiSidecar = await fx.proxy("api", api.url, fx.documents("api-own", [serviceDoc("api", apiPort, "http")]), ["--stream-idle-timeout", "600ms"]);
  const legacySidecar = await fx.proxy("legacy", `http://127.0.0.1:${legacy.port}`, fx.documents("legacy-own", [serviceDoc("legacy", legacy.port, "http")]));
  // Its service is not there: nothing listens at the port its Service declares.
  const gonePort = legacy.port === 1 ? 2 : 1;
  const goneSidecar = await fx.proxy("gone", `http://127.0.0.1:${gonePort}`, fx.documents("gone-own", [serviceDoc("gone", gonePort, "http")]));
  caller = await fx.proxy(
    "web",
    fx.echo("web").url,
    fx.documents("web", [serviceDoc("api", 80, undefined, [apiSidecar.ports.inbound]), serviceDoc("legacy", 80, undefined, [legacySidecar.ports.inbound]), serviceDoc("gone", 80, undefined, [goneSidecar.ports.inbound])]),
  );
});
afterAll(() => legacy?.stop());

interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
  /** The stream ended with RST_STREAM instead of a complete body. */
  reset: boolean;
}

function call(session: http2.ClientHttp2Session, headers: http2.OutgoingHttpHeaders, body?: Uint8Array | Uint8Array[]): Promise<Answer> {
  return new Promise((resolve) => {
    const req = session.request({ ":authority": "api", ...headers });
    const chunks: Buffer[] = [];
    let head: IncomingHttpHeaders = {};
    let reset = false;
    req.on("response", (h) => (head = h));
    req.on("data", (d: Buffer) => chunks.push(d));
    req.on("error", () => (reset = true));
    req.on("close", () => resolve({ status: Number(head[":status"] ?? 0), headers: head, body: Buffer.concat(chunks), reset: reset || req.rstCode !== http2.constants.NGHTTP2_NO_ERROR }));
    if (Array.isArray(body)) {
      const pieces = [...body];
      const next = () => {
        const piece = pieces.shift();
        if (piece === undefined) return void req.end();
        req.write(piece, next);
      };
      next();
    } else req.end(body);
  });
}

let session: http2.ClientHttp2Session;
beforeAll(() => {
  session = http2.connect(`http://127.0.0.1:${caller.ports.outbound}`);
  session.on("error", () => {});
});
afterAll(() => session?.close());

describe("an HTTP/2 call to a port declared protocol http reaches the service as HTTP/1.1", () => {
  test("method, path and query, :authority as Host, the caller's proven identity; a forged one removed", async () => {
    const r = await call(session, { ":method": "GET", ":path": "/items?id=7&x=%2F", "x-mesh-client-id": "spiffe://mesh.local/ns/default/sa/admin" });
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body.toString())).toMatchObject({ method: "GET", path: "/items?id=7&x=%2F", host: "api", caller: "spiffe://mesh.local/ns/default/sa/web", bytes: 0, contentLength: null, chunked: null });
  });

  test("cookie crumbs, sent as separate fields in HTTP/2, are one Cookie line in HTTP/1.1 (RFC 9113 §8.2.3)", async () => {
    const r = await call(session, { ":method": "GET", ":path": "/", cookie: ["a=1", "b=2"] });
    expect(JSON.parse(r.body.toString()).cookie).toBe("a=1; b=2");
  });

  test("a body with its content-length goes with it; one without goes chunked; both whole", async () => {
    const data = new Uint8Array(300_000).map((_, i) => (i * 7) % 251);
    const sum = data.reduce((a, b) => (a + b) % 65521, 0);
    const sized = await call(session, { ":method": "POST", ":path": "/upload", "content-length": String(data.byteLength) }, data);
    expect(JSON.parse(sized.body.toString())).toMatchObject({ contentLength: String(data.byteLength), chunked: null, bytes: data.byteLength, sum });
    const pieces = Array.from({ length: 10 }, (_, i) => data.subarray(i * 30_000, (i + 1) * 30_000));
    const streamed = await call(session, { ":method": "PUT", ":path": "/upload" }, pieces);
    expect(JSON.parse(streamed.body.toString())).toMatchObject({ method: "PUT", contentLength: null, chunked: "chunked", bytes: data.byteLength, sum });
  });

  test("an 8 MiB response streams back whole; HEAD gets the head alone", async () => {
    const r = await call(session, { ":method": "GET", ":path": "/big" });
    expect(r.status).toBe(200);
    expect(r.reset).toBe(false);
    expect(r.body.byteLength).toBe(8 * 1024 * 1024);
    expect(r.body.every((b) => b === 97)).toBe(true);
    // Each wait for the client's window left a listener on the stream behind, until Node's leak warning.
    expect(apiSidecar.stderr()).not.toContain("MaxListenersExceeded");
    const head = await call(session, { ":method": "HEAD", ":path": "/big" });
    expect(head.status).toBe(200);
    expect(head.body.byteLength).toBe(0);
  });

  test("each Set-Cookie stays its own field; Connection and what it lists stay behind", async () => {
    const r = await call(session, { ":method": "GET", ":path": "/cookies" });
    expect(r.headers["set-cookie"]).toEqual(["a=1; Path=/", "b=2; Path=/"]);
    expect(r.headers["x-kept"]).toBe("yes");
    expect(r.headers["x-private"]).toBeUndefined();
    expect(r.headers.connection).toBeUndefined();
    expect(r.headers["keep-alive"]).toBeUndefined();
  });

  test("a client that resets its stream mid-response: the service's request is given up too", async () => {
    const req = session.request({ ":method": "GET", ":path": "/slow", ":authority": "api" });
    await new Promise<void>((resolve) => req.once("data", () => resolve()));
    req.close(http2.constants.NGHTTP2_CANCEL);
    const until = Date.now() + 5000;
    while (!abandoned.includes("/slow") && Date.now() < until) await Bun.sleep(20);
    expect(abandoned).toContain("/slow");
  });

  test("curl --http2-prior-knowledge, a client that is not ours, gets the same", async () => {
    const proc = Bun.spawn(["curl", "-sS", "--http2-prior-knowledge", "-H", "Host: api", "-d", "hello", "-w", "\n%{http_version}", `http://127.0.0.1:${caller.ports.outbound}/form`], { stdout: "pipe", stderr: "pipe" });
    const [out, code] = await Promise.all([new Response(proc.stdout).text(), proc.exited]);
    expect(code).toBe(0);
    const [json, version] = out.split("\n");
    expect(version).toBe("2");
    expect(JSON.parse(json!)).toMatchObject({ method: "POST", path: "/form", host: "api", bytes: 5, caller: "spiffe://mesh.local/ns/default/sa/web" });
  });

  test("/config_dump says what the inbound speaks to the service", async () => {
    const dump = await (await fetch(`http://127.0.0.1:${apiSidecar.ports.admin}/config_dump`)).json();
    expect(JSON.stringify(dump)).toContain('"upstreamHttp":"http1"');
    const callers = await (await fetch(`http://127.0.0.1:${caller.ports.admin}/config_dump`)).json();
    expect(JSON.stringify(callers)).toContain(`"upstreamHttp":"caller's"`);
  });

  test("the translated calls are counted as the service's inbound requests", async () => {
    expect(await metricValue(apiSidecar.ports.admin, "mesh_requests_total", { direction: "inbound", peer: "web", status: "2xx" })).toBeGreaterThanOrEqual(8);
  });
});

describe("failures", () => {
  test("a response body cut short is a reset stream, never a complete one", async () => {
    const r = await call(session, { ":method": "GET", ":path": "/", ":authority": "legacy" });
    expect(r.status).toBe(200);
    expect(r.reset).toBe(true);
    expect(r.body.byteLength).toBeLessThan(1000);
  });

  test("a service silent past the stream idle timeout: 504, and its request given up", async () => {
    const r = await call(session, { ":method": "GET", ":path": "/silent" });
    expect(r.status).toBe(504);
    expect(r.headers["x-mesh-error"]).toBe("timeout");
    const until = Date.now() + 3000;
    while (!abandoned.includes("/silent") && Date.now() < until) await Bun.sleep(20);
    expect(abandoned).toContain("/silent");
  });

  test("a service that is not listening: 502 connect-failure, naming the local service", async () => {
    const r = await call(session, { ":method": "GET", ":path": "/", ":authority": "gone" });
    expect(r.status).toBe(502);
    expect(r.headers["x-mesh-error"]).toBe("connect-failure");
    expect(r.body.toString()).toContain("local service http://127.0.0.1:");
  });

  test("a body longer than its content-length is never answered as a call, and the service never reads past the length", async () => {
    const r = await call(session, { ":method": "POST", ":path": "/declared-3", "content-length": "3" }, new TextEncoder().encode("too long"));
    expect(r.status).not.toBe(200);
    await Bun.sleep(100);
    for (const seen of bodiesAt("/declared-3")) expect(seen).toBeLessThanOrEqual(3);
  });

  test("a gRPC call to an HTTP/1.1 port is refused with a status that says why, not sent on to fail", async () => {
    const client = greeterClient(caller.ports.outbound, "api");
    try {
      const r = await unary(client, "hello", { name: "x" });
      expect(r.error?.code).toBe(grpc.status.INTERNAL);
      expect(r.error?.details).toContain("needs HTTP/2");
      expect(r.error?.metadata.get("x-mesh-error")).toEqual(["bad-request"]);
    } finally {
      client.close();
    }
  });
});
