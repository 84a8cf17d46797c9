/**
 * Review: attacks on the features added last — an HTTPRoute rule's retries,
 * responseHeaders and mirror, gRPC deadlines, and Service addresses (the calls-by-address
 * half; the netfilter half is in test/redirect/redirect-review.test.ts). One caller
 * sidecar, "orders", whose config names every destination below; most of them are plain
 * servers outside the mesh (mtls: false) so that what the caller's sidecar itself does is
 * what is seen. Each test asserts the secure, documented behaviour.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import http2, { type IncomingHttpHeaders, type ServerHttp2Stream } from "node:http2";
import type { Socket, TCPSocketListener } from "bun";
import { fixtureFor, metricValue } from "../helpers/mesh-fixture.ts";
import { manifestIssues, validManifest } from "../helpers/policies.ts";
import { rawExchange } from "../helpers/raw-http.ts";
import { eventually } from "../helpers/wait.ts";
import { sharedAddresses, type Service } from "../../src/config/kinds/service.ts";

const fx = fixtureFor("orders", "api");
let caller: Awaited<ReturnType<typeof fx.proxy>>;
const listeners: TCPSocketListener<unknown>[] = [];
const h2Servers: http2.Http2Server[] = [];

// ---------------------------------------------------------------- config helpers

/** A Service outside the mesh at one loopback port; `more`: extra spec lines. */
const plainService = (name: string, port: number, more = "") => `---
apiVersion: mesh.dev/v1alpha1
kind: Service
metadata: { name: ${name} }
spec:
  mtls: false
  ports: [{ name: http, port: 80 }]
  endpoints: [{ address: 127.0.0.1, port: ${port} }]
${more}`;

const policy = (name: string, spec: string) => `---
apiVersion: mesh.dev/v1alpha1
kind: DestinationPolicy
metadata: { name: ${name} }
spec:
${spec}
`;

const route = (service: string, rules: string) => `---
apiVersion: mesh.dev/v1alpha1
kind: HTTPRoute
metadata: { name: ${service} }
spec:
  service: ${service}
  rules:
${rules}
`;

const portOf = (s: { url: string }) => Number(new URL(s.url).port);

// ---------------------------------------------------------------- raw HTTP/1.1 servers

interface RawReq {
  method: string;
  path: string;
  head: string;
  body: string;
}

/**
 * An HTTP/1.1 server on a raw socket, so its answers go out byte for byte: `answer` gets
 * each request (bodies by Content-Length) and returns the bytes to write, with `close` to
 * end the connection after them, `reset` to reset it instead, or undefined to say nothing.
 */
function rawServer(answer: (req: RawReq, sock: Socket<{ buf: string }>) => { bytes?: string; close?: boolean; reset?: boolean } | undefined): { port: number; hits: RawReq[]; open: () => number } {
  const hits: RawReq[] = [];
  let open = 0;
  const l = Bun.listen<{ buf: string }>({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      open(s) {
        s.data = { buf: "" };
        open++;
      },
      close() {
        open--;
      },
      data(s, bytes) {
        s.data.buf += bytes.toString("latin1");
        for (;;) {
          const end = s.data.buf.indexOf("\r\n\r\n");
          if (end < 0) return;
          const head = s.data.buf.slice(0, end);
          const cl = /\r\ncontent-length: *(\d+)/i.exec(head);
          const length = cl ? Number(cl[1]) : 0;
          if (s.data.buf.length < end + 4 + length) return;
          const body = s.data.buf.slice(end + 4, end + 4 + length);
          s.data.buf = s.data.buf.slice(end + 4 + length);
          const [method, path] = head.split(" ") as [string, string];
          const req = { method, path, head, body };
          hits.push(req);
          const a = answer(req, s);
          if (a === undefined) continue;
          if (a.reset) return void s.terminate();
          if (a.bytes) s.write(Buffer.from(a.bytes, "latin1"));
          if (a.close) return void s.end();
        }
      },
    },
  });
  listeners.push(l as TCPSocketListener<unknown>);
  return { port: l.port, hits, open: () => open };
}

const lines = (...ls: string[]) => ls.join("\r\n");

/** The service whose responses the route edits: what it answers depends on the path. */
const edited = rawServer((req) => {
  const p = req.path;
  if (p.endsWith("/204")) return { bytes: lines("HTTP/1.1 204 No Content", "X-Internal: s", "X-Kept: k", "", "") };
  if (p.endsWith("/304")) return { bytes: lines("HTTP/1.1 304 Not Modified", "ETag: \"v1\"", "X-Internal: s", "", "") };
  if (p.endsWith("/head")) return { bytes: lines("HTTP/1.1 200 OK", "Content-Length: 1000", "X-Internal: s", "", "") };
  if (p.endsWith("/close")) return { bytes: lines("HTTP/1.1 200 OK", "X-Internal: s", "Connection: close", "", "close-delimited body"), close: true };
  if (p.endsWith("/conn")) return { bytes: lines("HTTP/1.1 200 OK", "Connection: x-secret", "X-Secret: service", "X-Internal: s", "Content-Length: 2", "", "ok") };
  if (p.endsWith("/many")) {
    const many: string[] = [];
    for (let i = 0; i < 300; i++) many.push(i % 6 === 0 ? `X-Internal: s-${i}` : `X-Many-${i}: ${"v".repeat(80)}`);
    return { bytes: lines("HTTP/1.1 200 OK", ...many, "Content-Length: 4", "", "many") };
  }
  if (p.endsWith("/103")) return { bytes: lines("HTTP/1.1 103 Early Hints", "Link: </a.css>; rel=preload", "X-Internal: early", "", "") + lines("HTTP/1.1 200 OK", "X-Internal: s", "Content-Length: 2", "", "ok") };
  return { bytes: lines("HTTP/1.1 200 OK", "X-Internal: s", "Content-Length: 5", "", "whole") };
});

/** Reads the whole POST, then resets the connection: the request may well have been processed. */
const resetsAfterBody = rawServer(() => ({ reset: true }));
/** Accepts, reads, never answers. */
const hangs = rawServer(() => undefined);
/** Resets every request. */
const resets = rawServer(() => ({ reset: true }));

// ---------------------------------------------------------------- HTTP/2 servers

interface H2Rec {
  path: string;
  headers: IncomingHttpHeaders;
  body: string;
  ended: boolean;
  aborted: boolean;
}

/** An h2c server that records each stream when it opens; `answer` when its body has ended (or at once with `early`). */
async function h2Server(answer: ((stream: ServerHttp2Stream, rec: H2Rec) => void) | undefined, early = false): Promise<{ port: number; seen: H2Rec[] }> {
  const seen: H2Rec[] = [];
  const server = http2.createServer();
  server.on("stream", (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => {
    const rec: H2Rec = { path: String(headers[":path"]), headers: { ...headers }, body: "", ended: false, aborted: false };
    seen.push(rec);
    stream.on("data", (d: Buffer) => (rec.body += d.toString("latin1")));
    stream.on("aborted", () => (rec.aborted = true));
    stream.on("error", () => (rec.aborted = true));
    stream.on("close", () => {
      if (!rec.ended) rec.aborted = true;
    });
    stream.on("end", () => {
      rec.ended = true;
      if (!early && answer) answer(stream, rec);
    });
    if (early && answer) answer(stream, rec);
  });
  h2Servers.push(server);
  const port = await new Promise<number>((resolve) => server.listen(0, "127.0.0.1", () => resolve((server.address() as { port: number }).port)));
  return { port, seen };
}

const okH2 = (stream: ServerHttp2Stream) => {
  if (stream.destroyed) return;
  stream.respond({ ":status": 200, "content-type": "text/plain" });
  stream.end("ok");
};

const MESSAGE = Buffer.from([0, 0, 0, 0, 2, 8, 1]);

let h2main: Awaited<ReturnType<typeof h2Server>>;
let h2rec: Awaited<ReturnType<typeof h2Server>>;
let h2edit: Awaited<ReturnType<typeof h2Server>>;
let ghang: Awaited<ReturnType<typeof h2Server>>;
let gunavail: Awaited<ReturnType<typeof h2Server>>;

// ---------------------------------------------------------------- the mesh

/** What the m-rec mirror received. */
const copies: { method: string; path: string; host: string | null; headers: Record<string, string>; body: string }[] = [];
let always503: { hits: number; url: string };
const hitsOf: Record<string, { hits: number; url: string }> = {};

beforeAll(async () => {
  const unavailable = (name: string) => (hitsOf[name] = fx.service(() => new Response("down", { status: 503 })));
  always503 = unavailable("slow-backoff");
  unavailable("cap-breaker");
  unavailable("cap-budget");
  unavailable("post503");

  const main = fx.echo("main");
  const solo = fx.echo("solo");
  const v6 = fx.echo("v6svc");
  const rec = fx.service(async (req) => {
    const url = new URL(req.url);
    copies.push({ method: req.method, path: url.pathname, host: req.headers.get("host"), headers: Object.fromEntries(req.headers), body: await req.text() });
    return new Response("from the mirror");
  });
  const huge = fx.service(() => new Response(new Uint8Array(16 * 1024 * 1024).fill(120)));
  // A port nothing listens on.
  const gone = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const deadPort = gone.port;
  gone.stop(true);

  h2main = await h2Server(okH2);
  h2rec = await h2Server(okH2);
  h2edit = await h2Server((stream, rec) => {
    if (stream.destroyed) return;
    if (rec.headers["content-type"] === "application/grpc")
      return stream.respond({ ":status": 200, "content-type": "application/grpc", "grpc-status": "14", "x-internal": "s", x_internal: "s2" }, { endStream: true });
    stream.respond({ ":status": 200, "x-internal": "s", x_internal: "s2", "x-kept": "k" });
    stream.end("h2 body");
  });
  ghang = await h2Server(undefined);
  gunavail = await h2Server((stream) => !stream.destroyed && stream.respond({ ":status": 200, "content-type": "application/grpc", "grpc-status": "14", "grpc-message": "down" }, { endStream: true }), true);

  // A sidecar whose service is down: its inbound answers for it, with x-mesh-error.
  const api = await fx.proxy("api", "http://127.0.0.1:9");

  const config = [
    // Retries.
    plainService("reset-post", resetsAfterBody.port),
    route("reset-post", `    - backends: [{ service: reset-post }]\n      retries: { attempts: 5, retryOn: [reset, connect-failure, refused], statusCodes: [502, 503], backoff: { base: 1ms, max: 2ms } }`),
    plainService("post503", portOf(hitsOf["post503"]!)),
    route("post503", `    - backends: [{ service: post503 }]\n      retries: { attempts: 5, statusCodes: [503], backoff: { base: 1ms, max: 2ms } }`),
    plainService("cap-breaker", portOf(hitsOf["cap-breaker"]!)),
    policy("cap-breaker", "  circuitBreaker: { maxRetries: 0 }"),
    route("cap-breaker", `    - backends: [{ service: cap-breaker }]\n      retries: { attempts: 5, statusCodes: [503], backoff: { base: 1ms, max: 2ms } }`),
    plainService("cap-budget", portOf(hitsOf["cap-budget"]!)),
    policy("cap-budget", "  retries: { budget: { percent: 0, minPerSecond: 0 } }"),
    route("cap-budget", `    - backends: [{ service: cap-budget }]\n      retries: { attempts: 5, statusCodes: [503], backoff: { base: 1ms, max: 2ms } }`),
    plainService("slow-backoff", portOf(always503)),
    policy("slow-backoff", "  timeouts: { request: 300ms }"),
    route("slow-backoff", `    - backends: [{ service: slow-backoff }]\n      retries: { attempts: 3, statusCodes: [503], backoff: { base: 4s, max: 4s } }`),
    // Response headers.
    plainService("edited", edited.port),
    route(
      "edited",
      `    - matches: [{ path: { prefix: /edit } }]
      backends: [{ service: edited }]
      retries: { attempts: 0 }
      responseHeaders:
        set: [{ name: cache-control, value: max-age=60 }]
        add: [{ name: x-trace, value: routed }, { name: x-secret, value: routed }]
        remove: [x-internal]`,
    ),
    `---
apiVersion: mesh.dev/v1alpha1
kind: Service
metadata: { name: api }
spec:
  ports: [{ name: http, port: 80 }]
  endpoints: [{ address: 127.0.0.1, port: ${api.ports.inbound} }]
`,
    route("api", `    - backends: [{ service: api }]\n      retries: { attempts: 0 }\n      responseHeaders:\n        set: [{ name: cache-control, value: max-age=60 }]\n        add: [{ name: x-trace, value: routed }]`),
    // Mirrors.
    plainService("main", portOf(main)),
    plainService("m-rec", portOf(rec)),
    plainService("m-dead", deadPort),
    plainService("m-hang", hangs.port),
    policy("m-hang", "  circuitBreaker: { maxRequests: 5 }\n  timeouts: { request: 60s }"),
    plainService("m-huge", portOf(huge)),
    plainService("m-reset", resets.port),
    route(
      "main",
      ["rec", "dead", "hang", "huge", "reset"]
        .map((m) => `    - matches: [{ path: { prefix: /to-${m} } }]\n      backends: [{ service: main }]\n      mirror: { service: m-${m} }`)
        .join("\n"),
    ),
    plainService("solo", portOf(solo)),
    policy("solo", "  circuitBreaker: { maxRequests: 1 }"),
    route("solo", `    - backends: [{ service: solo }]\n      mirror: { service: solo }`),
    // HTTP/2 and gRPC.
    plainService("h2main", h2main.port),
    plainService("h2rec", h2rec.port),
    route("h2main", `    - matches: [{ path: { prefix: /to-rec } }]\n      backends: [{ service: h2main }]\n      mirror: { service: h2rec }`),
    plainService("h2edit", h2edit.port),
    route("h2edit", `    - backends: [{ service: h2edit }]\n      retries: { attempts: 0 }\n      responseHeaders:\n        add: [{ name: x-trace, value: routed }]\n        remove: [x-internal]`),
    plainService("ghang", ghang.port),
    plainService("gtimeout", ghang.port),
    policy("gtimeout", "  timeouts: { request: 200ms }"),
    plainService("gunavail", gunavail.port),
    route("gunavail", `    - backends: [{ service: gunavail }]\n      retries: { attempts: 3, grpcStatuses: [unavailable], backoff: { base: 4s, max: 4s } }`),
    // Calls by address.
    plainService("v6svc", portOf(v6), "  addresses: [fd00::5]\n"),
  ].join("");
  caller = await fx.proxy("orders", fx.echo("orders").url, fx.config("orders", {}, config));
});

afterAll(() => {
  for (const l of listeners) l.stop(true);
  for (const s of h2Servers) s.close();
});

// ---------------------------------------------------------------- helpers for calls

const outbound = () => caller.ports.outbound;

/** One raw exchange with the caller's outbound listener. */
const raw = (bytes: string, timeoutMs = 5000) => rawExchange(bytes, { port: outbound(), quietMs: 500, timeoutMs });

/** Header lines of the first response in `text`: lower-cased names, values trimmed. */
function headerLines(text: string): [string, string][] {
  const head = text.slice(0, text.indexOf("\r\n\r\n"));
  return head
    .split("\r\n")
    .slice(1)
    .map((l) => [l.slice(0, l.indexOf(":")).toLowerCase(), l.slice(l.indexOf(":") + 1).trim()] as [string, string]);
}
const valuesOf = (ls: [string, string][], name: string) => ls.filter(([n]) => n === name).map(([, v]) => v);

const get = (host: string, path: string, init: RequestInit = {}) =>
  fetch(`http://127.0.0.1:${outbound()}${path}`, { ...init, headers: { host, ...(init.headers as Record<string, string>) } });

interface H2Outcome {
  status: number;
  headers: IncomingHttpHeaders;
  grpcStatus: string | undefined;
  error: string | undefined;
  rst: number;
  body: string;
  ms: number;
}

let session: http2.ClientHttp2Session | undefined;
function h2(): http2.ClientHttp2Session {
  if (session === undefined || session.destroyed || session.closed) {
    session = http2.connect(`http://127.0.0.1:${outbound()}`);
    session.on("error", () => {});
  }
  return session;
}
afterAll(() => session?.close());

/**
 * One HTTP/2 stream: `body` written, then ended unless `keepOpen`; `resetAfterMs` resets
 * it from the client's side. Settles at its close, or after `giveUpMs`.
 */
function h2call(headers: Record<string, string>, opts: { body?: Buffer; keepOpen?: boolean; resetAfterMs?: number; giveUpMs?: number } = {}): Promise<H2Outcome> {
  const started = performance.now();
  return new Promise((resolve) => {
    const req = h2().request({ ":method": "POST", ...headers }, { endStream: false });
    const out: H2Outcome = { status: 0, headers: {}, grpcStatus: undefined, error: undefined, rst: 0, body: "", ms: 0 };
    let settled = false;
    const settle = () => {
      if (settled) return;
      settled = true;
      clearTimeout(giveUp);
      if (!req.closed) req.close(http2.constants.NGHTTP2_CANCEL);
      resolve({ ...out, rst: req.rstCode ?? 0, ms: performance.now() - started });
    };
    const giveUp = setTimeout(settle, opts.giveUpMs ?? 5000);
    req.on("response", (h) => {
      out.status = Number(h[":status"]);
      out.headers = h;
      out.grpcStatus = h["grpc-status"] as string | undefined;
      out.error = h["x-mesh-error"] as string | undefined;
      // A trailers-only answer to a call still sending: it is over for the client.
      if (out.grpcStatus !== undefined) setTimeout(settle, 50);
    });
    req.on("trailers", (t) => (out.grpcStatus = t["grpc-status"] as string | undefined));
    req.on("data", (d: Buffer) => (out.body += d.toString("latin1")));
    req.on("error", () => {});
    req.on("close", settle);
    if (opts.body) req.write(opts.body);
    if (!opts.keepOpen) req.end();
    // destroy with an error: Bun's close(code), and destroy() without one, end the body cleanly before their RST_STREAM (measured).
    if (opts.resetAfterMs !== undefined) setTimeout(() => !req.destroyed && req.destroy(new Error("cut by the client")), opts.resetAfterMs);
  });
}

const grpcHeaders = (authority: string, timeout?: string) => ({
  ":path": "/pkg.Svc/Do",
  ":authority": authority,
  "content-type": "application/grpc",
  te: "trailers",
  ...(timeout !== undefined ? { "grpc-timeout": timeout } : {}),
});

// ================================================================ config

describe("config", () => {
  test("a Service address with an IPv6 zone (fe80::1%eth0) is an error, never a crash", () => {
    let issues: string[] = [];
    let threw: string | undefined;
    try {
      issues = manifestIssues("Service", { ports: [{ name: "http", port: 80 }], addresses: ["fe80::1%eth0"] });
    } catch (err) {
      threw = (err as Error).message;
    }
    expect(threw).toBeUndefined();
    expect(issues.length).toBeGreaterThan(0);
    expect(issues[0]).toStartWith("spec.addresses[0]");
  });

  test("an IPv4-mapped IPv6 address is the IPv4 address: two Services cannot both claim it", () => {
    const svc = (name: string, address: string) => validManifest<Service>("Service", { ports: [{ name: "http", port: 80 }], addresses: [address] }, name);
    const shared = sharedAddresses([svc("a", "10.96.0.5"), svc("b", "::ffff:10.96.0.5")], (s) => s);
    expect(shared.map((s) => s.item.metadata.name)).toEqual(["b"]);
  });

  test("responseHeaders: no spelling lets a route touch the proxy's own headers", () => {
    const rule = (responseHeaders: unknown) => ({ service: "a", rules: [{ backends: [{ service: "a" }], responseHeaders }] });
    const refused = ["Transfer_Encoding", "CONTENT.LENGTH", "x.mesh.error", "X_Mesh_Overflow", "keep_alive", "Proxy-Connection", "TE", "trailer", "upgrade", "x-forwarded-client-cert", "l5d_client_id", "x~mesh~client~id", "X-MESH-TUNNEL"];
    for (const name of refused) {
      expect(manifestIssues("HTTPRoute", rule({ set: [{ name, value: "1" }] })).join()).toContain("is the proxy's own");
      expect(manifestIssues("HTTPRoute", rule({ remove: [name] })).join()).toContain("is the proxy's own");
    }
    // A value cannot carry a second line.
    expect(manifestIssues("HTTPRoute", rule({ add: [{ name: "x-a", value: "1\r\nx-mesh-error: forged" }] }))).not.toEqual([]);
  });

  test("a rule's backoff: max below the default base, a negative or malformed duration, are refused", () => {
    const rule = (retries: unknown) => ({ service: "a", rules: [{ backends: [{ service: "a" }], retries }] });
    expect(manifestIssues("HTTPRoute", rule({ backoff: { max: "10ms" } }))).toEqual(["spec.rules[0].retries.backoff.max: must be at least base"]);
    for (const bad of [{ base: "-1s" }, { base: "soon" }, { max: 5 }, { base: "1ms", max: "1ms", jitter: true }]) expect(manifestIssues("HTTPRoute", rule({ backoff: bad }))).not.toEqual([]);
    expect(manifestIssues("HTTPRoute", rule({ attempts: -1 }))).not.toEqual([]);
    expect(manifestIssues("HTTPRoute", rule({ statusCodes: [600] }))).not.toEqual([]);
    expect(manifestIssues("HTTPRoute", rule({ retryOn: ["5xx"] }))).not.toEqual([]);
  });
});

// ================================================================ retries

describe("a rule's retries (HTTP/1.1)", () => {
  test("a POST whose body reached the service is never sent again, whatever the rule retries on", async () => {
    const before = resetsAfterBody.hits.length;
    const res = await get("reset-post", "/pay", { method: "POST", body: "amount=5" });
    await res.arrayBuffer();
    expect(res.status).toBeGreaterThanOrEqual(500);
    await Bun.sleep(100);
    expect(resetsAfterBody.hits.length - before).toBe(1);
  });

  test("a POST without a body answered with a status the rule lists is not retried either (not idempotent)", async () => {
    const svc = hitsOf["post503"]!;
    const before = svc.hits;
    const res = await get("post503", "/pay", { method: "POST", headers: { "content-length": "0" } });
    await res.arrayBuffer();
    expect(res.status).toBe(503);
    expect(svc.hits - before).toBe(1);
  });

  test("the backend's breaker (maxRetries: 0) still caps a rule's attempts", async () => {
    const svc = hitsOf["cap-breaker"]!;
    const before = svc.hits;
    for (let i = 0; i < 3; i++) expect((await get("cap-breaker", "/x")).status).toBe(503);
    expect(svc.hits - before).toBe(3);
  });

  test("the backend's retry budget (0%, none per second) still caps a rule's attempts", async () => {
    const svc = hitsOf["cap-budget"]!;
    const before = svc.hits;
    for (let i = 0; i < 3; i++) expect((await get("cap-budget", "/x")).status).toBe(503);
    expect(svc.hits - before).toBe(3);
  });

  // The backoff is full jitter over 4 s: were the call held for it, five calls in a row
  // would all come back within 1.5 s about once in a hundred runs.
  test("the request timeout (300 ms) holds while a rule's retry waits out a long backoff", async () => {
    const started = performance.now();
    const results = await Promise.all(
      Array.from({ length: 5 }, async () => {
        const t = performance.now();
        const res = await get("slow-backoff", "/x");
        await res.arrayBuffer();
        return { status: res.status, error: res.headers.get("x-mesh-error"), ms: performance.now() - t };
      }),
    );
    for (const r of results) expect(r.status).toBeGreaterThanOrEqual(500);
    expect(results.map((r) => (r.ms < 1500 ? "in time" : `${r.status} ${r.error} after ${Math.round(r.ms)} ms`))).toEqual(Array(5).fill("in time"));
    expect(performance.now() - started).toBeLessThan(2000);
  });
});

// ================================================================ response headers

describe("a rule's responseHeaders (HTTP/1.1)", () => {
  test("204, 304 and HEAD answers get the edits and no body framing; the next request on the connection is intact", async () => {
    const r = await raw(
      "GET /edit/204 HTTP/1.1\r\nHost: edited\r\n\r\n" + "GET /edit/304 HTTP/1.1\r\nHost: edited\r\n\r\n" + "HEAD /edit/head HTTP/1.1\r\nHost: edited\r\n\r\n" + "GET /edit/whole HTTP/1.1\r\nHost: edited\r\nConnection: close\r\n\r\n",
    );
    expect(r.statuses).toEqual([204, 304, 200, 200]);
    const parts = r.text.split(/(?=HTTP\/1\.1 \d{3} )/);
    expect(parts).toHaveLength(4);
    for (const part of parts.slice(0, 3)) {
      const ls = headerLines(part);
      expect(valuesOf(ls, "cache-control")).toEqual(["max-age=60"]);
      expect(valuesOf(ls, "x-internal")).toEqual([]);
      expect(valuesOf(ls, "transfer-encoding")).toEqual([]);
      // No body after the blank line.
      expect(part.slice(part.indexOf("\r\n\r\n") + 4)).toBe("");
    }
    expect(parts[3]!.endsWith("whole")).toBe(true);
  });

  test("a close-delimited response is edited and arrives whole", async () => {
    const r = await raw("GET /edit/close HTTP/1.1\r\nHost: edited\r\nConnection: close\r\n\r\n");
    expect(r.statuses).toEqual([200]);
    const ls = headerLines(r.text);
    expect(valuesOf(ls, "x-internal")).toEqual([]);
    expect(valuesOf(ls, "x-trace")).toEqual(["routed"]);
    const body = r.text.slice(r.text.indexOf("\r\n\r\n") + 4);
    const dechunked = valuesOf(ls, "transfer-encoding").includes("chunked") ? body.replace(/(^|\r\n)[0-9a-f]+\r\n/g, "").replace(/\r\n$/, "") : body;
    expect(dechunked).toBe("close-delimited body");
  });

  test("a header the service lists in Connection is dropped before the rule adds its own of that name", async () => {
    const r = await raw("GET /edit/conn HTTP/1.1\r\nHost: edited\r\nConnection: close\r\n\r\n");
    const ls = headerLines(r.text);
    expect(valuesOf(ls, "x-secret")).toEqual(["routed"]);
    expect(valuesOf(ls, "connection").join()).not.toContain("x-secret");
  });

  test("a head of 300 fields (30 KiB): every copy removed, the others intact and in order", async () => {
    const r = await raw("GET /edit/many HTTP/1.1\r\nHost: edited\r\nConnection: close\r\n\r\n");
    expect(r.statuses).toEqual([200]);
    const ls = headerLines(r.text);
    expect(valuesOf(ls, "x-internal")).toEqual([]);
    const many = ls.filter(([n]) => n.startsWith("x-many-")).map(([n]) => Number(n.slice(7)));
    expect(many).toEqual(Array.from({ length: 300 }, (_, i) => i).filter((i) => i % 6 !== 0));
    expect(r.text.endsWith("many")).toBe(true);
  });

  test("an interim 103 never carries what the rule removes", async () => {
    const r = await raw("GET /edit/103 HTTP/1.1\r\nHost: edited\r\nConnection: close\r\n\r\n");
    expect(r.statuses.at(-1)).toBe(200);
    expect(r.text.toLowerCase()).not.toContain("x-internal");
  });

  test("the answer of the callee's sidecar (x-mesh-error) is a proxy's answer: the caller's route leaves it as it is", async () => {
    const r = await raw("GET /x HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n");
    const ls = headerLines(r.text);
    expect(r.statuses[0]).toBeGreaterThanOrEqual(500);
    expect(valuesOf(ls, "x-mesh-error")).not.toEqual([]);
    expect(valuesOf(ls, "x-trace")).toEqual([]);
    expect(valuesOf(ls, "cache-control")).not.toContain("max-age=60");
  });

  test("HTTP/2: every spelling of a removed header goes, on a response and on a trailers-only gRPC answer", async () => {
    const plain = await h2call({ ":method": "GET", ":path": "/x", ":authority": "h2edit" });
    expect(plain.status).toBe(200);
    expect([plain.headers["x-internal"], plain.headers["x_internal"], plain.headers["x-trace"], plain.headers["x-kept"]]).toEqual([undefined, undefined, "routed", "k"]);
    const grpc = await h2call(grpcHeaders("h2edit"), { body: MESSAGE });
    expect(grpc.grpcStatus).toBe("14");
    expect([grpc.headers["x-internal"], grpc.headers["x_internal"]]).toEqual([undefined, undefined]);
  });
});

// ================================================================ mirror

const mirrored = (peer: string, outcome?: string) => metricValue(caller.ports.admin, "mesh_mirrored_total", outcome ? { peer, outcome } : { peer });

describe("a rule's mirror (HTTP/1.1)", () => {
  test("a mirror to the routed service itself never takes the call's place in its breaker (maxRequests: 1)", async () => {
    const res = await get("solo", "/x");
    const body = await res.text();
    expect([res.status, res.headers.get("x-mesh-overflow")]).toEqual([200, null]);
    expect(JSON.parse(body)).toMatchObject({ service: "solo" });
  });

  test("a dead mirror slows and breaks nothing: 20 calls answered at once, the copies counted as failed", async () => {
    const before = await mirrored("m-dead");
    const started = performance.now();
    for (let i = 0; i < 20; i++) {
      const res = await get("main", `/to-dead/${i}`);
      expect([res.status, ((await res.json()) as { path: string }).path]).toEqual([200, `/to-dead/${i}`]);
    }
    expect(performance.now() - started).toBeLessThan(5000);
    expect(await eventually(async () => (await mirrored("m-dead")) - before === 20)).toBe(true);
  });

  test("a mirror that never answers: 200 calls answered, copies held to the mirror's own breaker (5), none queued without bound", async () => {
    const before = await mirrored("m-hang");
    const started = performance.now();
    for (let i = 0; i < 200; i++) {
      const res = await get("main", `/to-hang/${i}`);
      await res.arrayBuffer();
      expect(res.status).toBe(200);
    }
    expect(performance.now() - started).toBeLessThan(30_000);
    // Five copies wait at the mirror; the rest were refused by its breaker, and counted.
    expect(hangs.open()).toBeLessThanOrEqual(5);
    expect(await eventually(async () => (await mirrored("m-hang", "5xx")) >= 195)).toBe(true);
    expect((await mirrored("m-hang")) - before).toBeGreaterThanOrEqual(195);
  });

  test("a mirror that resets, or answers 16 MiB, changes nothing of the calls", async () => {
    for (const to of ["reset", "huge"])
      for (let i = 0; i < 5; i++) {
        const res = await get("main", `/to-${to}/${i}`);
        expect([res.status, ((await res.json()) as { service: string }).service]).toEqual([200, "main"]);
      }
  });

  test("pipelined after a mirrored POST, the next request is intact, and each copy carries exactly its own body", async () => {
    const r = await raw(
      "POST /to-rec/pipe1 HTTP/1.1\r\nHost: main\r\nContent-Length: 5\r\n\r\nhello" +
        "POST /to-rec/pipe2 HTTP/1.1\r\nHost: main\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n" +
        "GET /to-rec/pipe3 HTTP/1.1\r\nHost: main\r\nConnection: close\r\n\r\n",
    );
    expect(r.statuses).toEqual([200, 200, 200]);
    const bodies = r.text.split(/HTTP\/1\.1 200 [^\r]*\r\n/).slice(1).map((p) => p.slice(p.indexOf("\r\n\r\n") + 4));
    expect(bodies.map((b) => JSON.parse(b.replace(/^[0-9a-f]+\r\n|\r\n[0-9a-f]+\r\n|\r\n0\r\n\r\n$|\r\n$/g, "")) as { path: string; body: string }).map((b) => [b.path, b.body])).toEqual([
      ["/to-rec/pipe1", "hello"],
      ["/to-rec/pipe2", "abc"],
      ["/to-rec/pipe3", ""],
    ]);
    expect(await eventually(() => copies.filter((c) => c.path.startsWith("/to-rec/pipe")).length === 3)).toBe(true);
    const got = Object.fromEntries(copies.filter((c) => c.path.startsWith("/to-rec/pipe")).map((c) => [c.path, [c.method, c.body, c.host]]));
    expect(got).toEqual({ "/to-rec/pipe1": ["POST", "hello", "main-shadow"], "/to-rec/pipe2": ["POST", "abc", "main-shadow"], "/to-rec/pipe3": ["GET", "", "main-shadow"] });
  });

  test("a body cut short is never copied as if whole", async () => {
    await raw("POST /to-rec/cut HTTP/1.1\r\nHost: main\r\nContent-Length: 100\r\n\r\n0123456789", 800);
    await Bun.sleep(300);
    expect(copies.filter((c) => c.path === "/to-rec/cut")).toEqual([]);
  });

  test("a caller's forged identity headers, in any spelling, never reach the mirror", async () => {
    const forged = "spiffe://mesh.local/ns/default/sa/admin";
    const r = await raw(
      `GET /to-rec/forged HTTP/1.1\r\nHost: main\r\nx-mesh-client-id: ${forged}\r\nx_mesh_client_id: ${forged}\r\nX-Forwarded-Client-Cert: By=${forged}\r\nl5d-client-id: admin\r\nConnection: close\r\n\r\n`,
    );
    expect(r.statuses).toEqual([200]);
    expect(await eventually(() => copies.some((c) => c.path === "/to-rec/forged"))).toBe(true);
    const headers = copies.find((c) => c.path === "/to-rec/forged")!.headers;
    expect(Object.keys(headers).filter((h) => /client.id|client.cert/i.test(h))).toEqual([]);
  });
});

describe("a rule's mirror (HTTP/2)", () => {
  test("a stream the client resets mid-body is never ended whole at the mirror; a whole one is", async () => {
    const whole = await h2call({ ":path": "/to-rec/whole", ":authority": "h2main" }, { body: Buffer.from("all of it") });
    expect(whole.status).toBe(200);
    expect(await eventually(() => h2rec.seen.some((s) => s.path === "/to-rec/whole" && s.ended))).toBe(true);
    expect(h2rec.seen.find((s) => s.path === "/to-rec/whole")!.body).toBe("all of it");

    await h2call({ ":path": "/to-rec/cut", ":authority": "h2main" }, { body: Buffer.alloc(10_000, 97), keepOpen: true, resetAfterMs: 150, giveUpMs: 2000 });
    await Bun.sleep(400);
    // The client's reset was one: the call's own service saw its stream cut, not ended.
    expect(h2main.seen.filter((s) => s.path === "/to-rec/cut").map((s) => s.ended)).toEqual([false]);
    expect(h2rec.seen.filter((s) => s.path === "/to-rec/cut" && s.ended)).toEqual([]);
  });

  test("a caller's forged identity headers, in any spelling, never reach the mirror", async () => {
    const forged = "spiffe://mesh.local/ns/default/sa/admin";
    const r = await h2call({ ":path": "/to-rec/forged", ":authority": "h2main", "x-mesh-client-id": forged, x_mesh_client_id: forged, "l5d-client-id": "admin" }, { body: Buffer.from("b") });
    expect(r.status).toBe(200);
    expect(await eventually(() => h2rec.seen.some((s) => s.path === "/to-rec/forged" && s.ended))).toBe(true);
    const headers = h2rec.seen.find((s) => s.path === "/to-rec/forged")!.headers;
    expect(Object.keys(headers).filter((h) => /client.id/i.test(h))).toEqual([]);
    expect(h2main.seen.find((s) => s.path === "/to-rec/forged")!.headers["x-mesh-client-id"]).toBeUndefined();
  });
});

// ================================================================ gRPC deadlines

describe("gRPC deadlines", () => {
  test("a deadline shorter than the rule's retry backoff: DEADLINE_EXCEEDED at the deadline, not after the backoff", async () => {
    const results = await Promise.all(Array.from({ length: 3 }, () => h2call(grpcHeaders("gunavail", "300m"), { body: MESSAGE })));
    for (const r of results) {
      expect([r.grpcStatus, r.error]).toEqual(["4", "timeout"]);
      expect(r.ms).toBeLessThan(1500);
    }
  });

  test('"0m": the deadline has passed already; DEADLINE_EXCEEDED at once', async () => {
    const r = await h2call(grpcHeaders("ghang", "0m"), { body: MESSAGE });
    expect(r.grpcStatus).toBe("4");
    expect(r.ms).toBeLessThan(1000);
  });

  test("a deadline while the client is still sending: DEADLINE_EXCEEDED, and the service's stream cut, never ended", async () => {
    const before = ghang.seen.length;
    const r = await h2call(grpcHeaders("ghang", "300m"), { body: MESSAGE, keepOpen: true, giveUpMs: 3000 });
    expect(r.grpcStatus).toBe("4");
    expect(r.ms).toBeGreaterThanOrEqual(290);
    expect(r.ms).toBeLessThan(2000);
    await Bun.sleep(200);
    const seen = ghang.seen.slice(before);
    expect(seen).toHaveLength(1);
    expect([seen[0]!.ended, seen[0]!.aborted]).toEqual([false, true]);
  });

  test("the backend's request timeout (200 ms) still holds under a longer grpc-timeout", async () => {
    const r = await h2call(grpcHeaders("gtimeout", "5S"), { body: MESSAGE });
    expect(r.error).toBe("timeout");
    expect(r.grpcStatus).not.toBe("0");
    expect(r.ms).toBeLessThan(1500);
  });
});

// ================================================================ calls by address

describe("calls by address", () => {
  test("two Services claiming one address in a sidecar's own config: the config is refused, the sidecar does not start", async () => {
    const twice = (name: string) => `---\napiVersion: mesh.dev/v1alpha1\nkind: Service\nmetadata: { name: ${name} }\nspec:\n  ports: [{ name: http, port: 80 }]\n  addresses: [10.96.0.7]\n  endpoints: [{ address: 127.0.0.1, port: 9 }]\n`;
    let failed: string | undefined;
    try {
      await fx.proxy("orders", "http://127.0.0.1:9", fx.config("twice", {}, twice("one") + twice("two")), [], { timeoutMs: 8000 });
    } catch (err) {
      failed = (err as Error).message;
    }
    expect(failed ?? "the sidecar started with both").toContain("10.96.0.7");
  });

  test("an IPv6 Service address in Host, in any written form, bracketed, reaches its Service; unbracketed, nothing", async () => {
    for (const host of ["[fd00::5]", "[FD00:0::5]:80", "[fd00:0000:0000:0000:0000:0000:0000:0005]"]) {
      const r = await raw(`GET /x HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
      expect([host, r.statuses[0]]).toEqual([host, 200]);
      expect(r.text).toContain('"service":"v6svc"');
    }
    const bare = await raw("GET /x HTTP/1.1\r\nHost: fd00::5\r\nConnection: close\r\n\r\n");
    expect(bare.statuses[0]).not.toBe(200);
  });
});
