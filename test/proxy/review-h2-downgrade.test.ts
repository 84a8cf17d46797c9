/**
 * Attacker's review of the h2→h1 downgrade (h2/http1-upstream.ts): HTTP/2 streams that a
 * sidecar translates into HTTP/1.1 requests because its own Service declares the port
 * `protocol: http`. Threat list: "h2→h1 downgrade with forbidden or mismatched headers".
 *
 * Topology, all on loopback:
 *   raw frames / node:http2  →  web sidecar (outbound, h2c)  →  mTLS, ALPN h2
 *     →  api sidecar (inbound, translates)  →  HTTP/1.1  →  a raw TCP service recording every byte
 * and frames straight to the api sidecar's inbound over mTLS with the certificate of
 * "peer" (a valid workload of the same CA), which skips the caller sidecar's own checks.
 *
 * What must hold: the service never receives a second (smuggled) request, a split header,
 * a body unlike what its head announced, or an identity header the proxy did not set;
 * a malformed request gets a 4xx or a reset, never a 2xx; a malformed response reaches
 * the client as an error or a reset, never as a complete-looking one, and its HTTP/1.1
 * connection is never reused; resources stay bounded; the sidecar keeps serving.
 *
 * Where a refusal is Bun's (its HTTP/2 parser resets the stream before mesh sees it) the
 * outcome is a RST_STREAM; where it is mesh's, a 4xx HEADERS (`status:4xx` below).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readdirSync } from "node:fs";
import http2, { type IncomingHttpHeaders } from "node:http2";
import { clientTls, rssMiB } from "../helpers/data-plane.ts";
import { fixtureFor, serviceDoc } from "../helpers/mesh-fixture.ts";
import { rawServer, type RawRequest, type RawServer } from "../helpers/raw-h1-server.ts";
import { block, F, frame, headerFrames, RawH2, rstFrame, T } from "../helpers/raw-h2.ts";
import { eventually } from "../helpers/wait.ts";

const WEB = "spiffe://mesh.local/ns/default/sa/web";
const PEER = "spiffe://mesh.local/ns/default/sa/peer";
const MAX_BODY = 1024 * 1024;
const HUGE = 256 * 2 ** 20;

const fx = fixtureFor("web", "api", "peer", "batch");
type Proxy = Awaited<ReturnType<typeof fx.proxy>>;
let svc: RawServer;
let api: Proxy;
let web: Proxy;
/** The /huge responses: bytes the kernel took from the service, and how many are still open. */
const huge = { written: 0, open: 0 };

// ---------------------------------------------------------------------------------------
// The service: a raw HTTP/1.1 server. /resp/<case>: a scripted (often malformed) response;
// /slow: answered after 1.5 s; /huge: 256 MiB with backpressure; /hold: never answered;
// anything else: 200 with a JSON echo of what it parsed.
// ---------------------------------------------------------------------------------------
const reply200 = (r: RawRequest, body: string) => r.reply(`HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body, "latin1")}\r\n\r\n${body}`);
const targetOf = (r: RawRequest) => r.head.split("\r\n")[0]!.split(" ")[1] ?? "";

const RESP: Record<string, (r: RawRequest) => void> = {
  "cl-and-te": (r) => r.reply("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
  "extra-bytes": (r) => r.reply("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled"),
  "extra-bytes-later": (r) => {
    r.reply("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    setTimeout(() => r.reply("HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled"), 30);
  },
  "chunked-cut-rst": (r) => {
    r.reply("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
    setTimeout(() => r.destroy(), 100);
  },
  "chunked-cut-fin": (r) => {
    r.reply("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
    setTimeout(() => r.end(), 100);
  },
  "length-cut-fin": (r) => {
    r.reply("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhello");
    setTimeout(() => r.end(), 100);
  },
  "close-delimited-cut-rst": (r) => {
    r.reply("HTTP/1.1 200 OK\r\n\r\nhello");
    setTimeout(() => r.destroy(), 100);
  },
  // Says it closes, but leaves the connection open.
  "connection-close": (r) => r.reply("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"),
  interim: (r) => r.reply("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal"),
  "204-with-body": (r) => r.reply("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello"),
  "304-with-body": (r) => r.reply("HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\nhello"),
  // Answers a HEAD as it should: the length of what a GET would get, no body.
  head: (r) => r.reply("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"),
  // Answers a HEAD with a body: bytes that would be read as the next response.
  "head-with-body": (r) => r.reply("HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled"),
  "set-cookies": (r) => r.reply("HTTP/1.1 200 OK\r\nSet-Cookie: a=1; Path=/\r\nSet-Cookie: b=2, c=3\r\nContent-Length: 2\r\n\r\nok"),
  "forbidden-headers": (r) =>
    r.reply("HTTP/1.1 200 OK\r\nConnection: keep-alive, x-secret\r\nKeep-Alive: timeout=5\r\nUpgrade: h2c\r\nProxy-Connection: keep-alive\r\nx-secret: 1\r\nTE: trailers\r\nTrailer: x-t\r\nx-kept: yes\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"),
  "host-header": (r) => r.reply("HTTP/1.1 200 OK\r\nHost: evil.example\r\nx-kept: yes\r\nContent-Length: 2\r\n\r\nok"),
  "dup-content-length": (r) => r.reply("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok"),
  "list-content-length": (r) => r.reply("HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok"),
  "identity-in-response": (r) => r.reply("HTTP/1.1 200 OK\r\nx-mesh-client-id: spiffe://mesh.local/ns/default/sa/admin\r\nl5d_client_id: admin\r\nContent-Length: 2\r\n\r\nok"),
  "chunked-trailers": (r) => r.reply("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-mesh-client-id\r\n\r\n2\r\nok\r\n0\r\nx-mesh-client-id: spiffe://mesh.local/ns/default/sa/admin\r\n\r\n"),
  "switching-protocols": (r) => r.reply("HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n"),
  "big-head": (r) => r.reply(`HTTP/1.1 200 OK\r\n${Array.from({ length: 60 }, (_, i) => `x-h${i}: ${"v".repeat(1000)}\r\n`).join("")}Content-Length: 2\r\n\r\nok`),
};

function pumpHuge(r: RawRequest): void {
  const chunk = Buffer.alloc(256 * 1024, 120);
  r.reply(`HTTP/1.1 200 OK\r\ncontent-length: ${HUGE}\r\n\r\n`);
  let queued = 0;
  huge.open++;
  const tick = () => {
    if (r.socket.readyState !== 1) return void huge.open--;
    // The raw server keeps what the socket did not take in data.out: write on only when it is empty.
    while (r.socket.data.out.length === 0 && queued < HUGE) {
      r.reply(chunk);
      queued += chunk.byteLength;
      if (r.socket.data.out.length === 0) huge.written += chunk.byteLength;
    }
    if (queued >= HUGE) return void huge.open--;
    setTimeout(tick, 5);
  };
  tick();
}

/** Each case sent on `side`: what went wrong with those not refused (4xx or reset), or that reached the service. */
async function notRefused(side: Side, cases: Record<string, (m: string) => [string, string][]>, label: string): Promise<string[]> {
  const wrong: string[] = [];
  for (const [name, fields] of Object.entries(cases)) {
    const m = marker(label);
    const before = snapshot();
    const { verdict: v, c } = await rawCall(side, fields(m));
    await Bun.sleep(30);
    c.close();
    const reached = bytesSince(before);
    if (!refused(v)) wrong.push(`${name}: the client got ${v}`);
    if (reached.length > 0) wrong.push(`${name}: the service received ${JSON.stringify(reached.join(" | "))}`);
  }
  return wrong;
}

const DENY_ADMIN = `apiVersion: mesh.dev/v1alpha1
kind: AuthorizationPolicy
metadata: { name: no-admin }
spec:
  service: api
  action: deny
  rules:
    - to: { paths: [/admin, /admin/*] }`;

beforeAll(async () => {
  svc = rawServer((r) => {
    const target = targetOf(r);
    const path = target.split("?")[0]!;
    if (path.startsWith("/resp/")) return RESP[path.slice(6)]?.(r);
    if (path === "/slow") return void setTimeout(() => r.socket.readyState === 1 && reply200(r, JSON.stringify({ target })), 1500);
    if (path === "/huge") return pumpHuge(r);
    if (path === "/hold") return;
    reply200(r, JSON.stringify({ target, conn: r.conn, bodyBytes: r.body.byteLength }));
  });
  api = await fx.proxy("api", `http://127.0.0.1:${svc.port}`, fx.documents("api-own", [serviceDoc("api", svc.port, "http"), DENY_ADMIN]), [
    "--stream-idle-timeout",
    "4000ms",
    "--max-body-size",
    String(MAX_BODY),
  ]);
  web = await fx.proxy("web", fx.echo("web").url, fx.documents("web", [serviceDoc("api", 80, undefined, [api.ports.inbound])]));
});
afterAll(() => svc?.stop());

// ---------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------
type Side = "outbound" | "inbound";
const SIDES: Side[] = ["outbound", "inbound"];
const peerTls = () => clientTls(fx, "peer");
const callerOf = (side: Side) => (side === "outbound" ? WEB : PEER);
const openRaw = (side: Side, initial: [number, number][] = []) => (side === "outbound" ? RawH2.plain(web.ports.outbound, initial) : RawH2.tls(api.ports.inbound, peerTls(), initial));
const session = (side: Side) => {
  const s = side === "outbound" ? http2.connect(`http://127.0.0.1:${web.ports.outbound}`) : http2.connect(`https://127.0.0.1:${api.ports.inbound}`, { ...peerTls(), rejectUnauthorized: true, checkServerIdentity: () => undefined });
  s.on("error", () => {});
  return s;
};
const marker = (name: string) => `${name}-${Math.random().toString(36).slice(2, 10)}`;

/** HPACK integer at buf[pos] with an n-bit prefix: [value, next position]. */
function hpackIntAt(buf: Buffer, pos: number, bits: number): [number, number] {
  const max = (1 << bits) - 1;
  let v = buf[pos]! & max;
  pos++;
  if (v < max) return [v, pos];
  let m = 0;
  for (;;) {
    const b = buf[pos++]!;
    v += (b & 127) * 2 ** m;
    m += 7;
    if ((b & 128) === 0) return [v, pos];
  }
}
/** Digits of a Huffman-coded string (RFC 7541 Appendix B: '0'-'2' are 5 bits, '3'-'9' 6 bits). */
function huffmanDigits(bytes: Buffer): string {
  let bits = "";
  for (const b of bytes) bits += b.toString(2).padStart(8, "0");
  let out = "";
  for (let i = 0; i + 5 <= bits.length; ) {
    const v5 = parseInt(bits.slice(i, i + 5), 2);
    if (v5 <= 2) {
      out += String(v5);
      i += 5;
      continue;
    }
    if (i + 6 > bits.length) break;
    const v6 = parseInt(bits.slice(i, i + 6), 2);
    if (v6 < 0x19 || v6 > 0x1f) break; // padding (all ones) or not a digit
    out += String(3 + v6 - 0x19);
    i += 6;
  }
  return out;
}
const STATIC_STATUS: Record<number, number> = { 8: 200, 9: 204, 10: 206, 11: 304, 12: 400, 13: 404, 14: 500 };
/** The :status of the first HEADERS frame on `stream` (0 when none or not decodable): enough HPACK for a status. */
function statusOf(c: RawH2, stream: number): number {
  const f = c.of(T.HEADERS, stream)[0];
  if (f === undefined) return 0;
  let p = f.payload;
  if (f.flags & 0x8) p = p.subarray(1, p.byteLength - p[0]!);
  if (f.flags & 0x20) p = p.subarray(5);
  let pos = 0;
  while (pos < p.byteLength) {
    const b = p[pos]!;
    if (b & 0x80) {
      const [idx] = hpackIntAt(p, pos, 7);
      return STATIC_STATUS[idx] ?? 0;
    }
    if ((b & 0xe0) === 0x20) {
      pos = hpackIntAt(p, pos, 5)[1];
      continue;
    }
    const [nameIdx, afterName] = hpackIntAt(p, pos, b & 0x40 ? 6 : 4);
    if (nameIdx < 8 || nameIdx > 14) return 0;
    const huffman = (p[afterName]! & 0x80) !== 0;
    const [len, at] = hpackIntAt(p, afterName, 7);
    const value = p.subarray(at, at + len);
    return Number(huffman ? huffmanDigits(value) : value.toString("latin1"));
  }
  return 0;
}
/** How a raw stream ended for its client: "status:NNN" (a response), "rst:<code>", "goaway:<code>", "closed" or "none". */
function verdict(c: RawH2, stream: number): string {
  if (c.of(T.HEADERS, stream).length > 0) return `status:${statusOf(c, stream)}`;
  return c.outcome(stream);
}
const refused = (v: string) => /^(rst|goaway|closed|status:4)/.test(v);

/** A raw request on a fresh connection: its header block, then DATA frames (the last ends the stream unless `end` is false); its verdict. */
async function rawCall(side: Side, fields: [string, string][], data: Buffer[] = [], opts: { end?: boolean; waitMs?: number } = {}): Promise<{ verdict: string; c: RawH2 }> {
  const c = await openRaw(side);
  const end = opts.end ?? true;
  c.write(headerFrames(1, block(fields), data.length === 0 && end));
  data.forEach((d, i) => c.write(frame(T.DATA, i === data.length - 1 && end ? F.END_STREAM : 0, 1, d)));
  await eventually(() => c.ending(1) !== "open" || c.of(T.HEADERS, 1).length > 0, opts.waitMs ?? 2000, 10);
  await Bun.sleep(20);
  const v = verdict(c, 1);
  return { verdict: v, c };
}
const req = (path: string, extra: [string, string][] = [], method = "GET", authority = "api"): [string, string][] => [
  [":method", method],
  [":scheme", "http"],
  [":path", path],
  [":authority", authority],
  ...extra,
];

interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
  /** Ended with RST_STREAM (or an error) instead of a complete body. */
  reset: boolean;
  /** Still open when the wait ran out. */
  open: boolean;
  /** The client's stream error, if any. */
  error: string;
}
function call(s: http2.ClientHttp2Session, headers: http2.OutgoingHttpHeaders, body?: Uint8Array | Uint8Array[], opts: { waitMs?: number; gapMs?: number } = {}): Promise<Answer> {
  return new Promise((resolve) => {
    const r = s.request({ ":authority": "api", ":method": "GET", ...headers });
    const chunks: Buffer[] = [];
    let head: IncomingHttpHeaders = {};
    let reset = false;
    let error = "";
    let settled = false;
    const done = (open: boolean) => {
      if (settled) return;
      settled = true;
      resolve({ status: Number(head[":status"] ?? 0), headers: head, body: Buffer.concat(chunks), reset: reset || (!open && (r.rstCode ?? 0) !== http2.constants.NGHTTP2_NO_ERROR), open, error });
    };
    r.on("response", (h) => (head = h));
    r.on("data", (d: Buffer) => chunks.push(d));
    r.on("error", (e) => ((reset = true), (error = e.message)));
    r.on("close", () => done(false));
    setTimeout(() => {
      done(true);
      r.close(http2.constants.NGHTTP2_CANCEL);
    }, opts.waitMs ?? 5000);
    if (Array.isArray(body)) {
      const pieces = [...body];
      const next = () => {
        const piece = pieces.shift();
        if (piece === undefined) return void r.end();
        r.write(piece, () => void setTimeout(next, opts.gapMs ?? 0));
      };
      next();
    } else r.end(body);
  });
}

/** Where the service's byte counters stand, to read what arrived since. */
const snapshot = () => ({ bytes: svc.received.map((s) => s.length), requests: svc.requests.length, accepted: svc.accepted });
type Snap = ReturnType<typeof snapshot>;
/** Every byte the service received since `s`, connection by connection. */
const bytesSince = (s: Snap) => svc.received.map((text, i) => text.slice(s.bytes[i] ?? 0)).filter((t) => t !== "");
const requestsSince = (s: Snap) => svc.requests.slice(s.requests);

const IDENTITY = ["x-mesh-client-id", "x-forwarded-client-cert", "l5d-client-id", "x-mesh-tunnel"];
/**
 * What is wrong with the bytes the service received (each string: one connection's new
 * bytes), as messages; none when every head is well formed, carries exactly one
 * x-mesh-client-id naming `caller` and no other identity field in any spelling, no
 * sentinel "smuggled" line, and no more than `maxRequests` request lines in all.
 */
function serviceProblems(conns: string[], caller: string, maxRequests = 1): string[] {
  const problems: string[] = [];
  let requestLines = 0;
  for (const bytes of conns) {
    const heads = bytes.split("\r\n\r\n");
    for (const head of heads) {
      const lines = head.split("\r\n");
      for (let i = 0; i < lines.length; i++) {
        const line = lines[i]!;
        if (/^[!-~]+ \S+ HTTP\/1\.[01]$/.test(line)) {
          requestLines++;
          if (line.includes("smuggled")) problems.push(`a smuggled request line: ${JSON.stringify(line)}`);
          const ids = lines.filter((l) => IDENTITY.includes(l.split(":")[0]!.toLowerCase().replace(/[^a-z0-9-]/g, "-")));
          if (ids.length !== 1 || ids[0]!.toLowerCase() !== `x-mesh-client-id: ${caller}`) problems.push(`identity fields ${JSON.stringify(ids)} (want only x-mesh-client-id: ${caller})`);
          continue;
        }
        if (/^smuggled|^x-smuggled|\bGET \/smuggled/i.test(line)) problems.push(`a line the client smuggled in: ${JSON.stringify(line)}`);
        if (/[\x00-\x08\x0a-\x1f\x7f]/.test(line)) problems.push(`a control byte in ${JSON.stringify(line)}`);
      }
    }
  }
  if (requestLines > maxRequests) problems.push(`${requestLines} request lines (at most ${maxRequests})`);
  return problems;
}

/** What is wrong with the sidecars' liveness: both up, and a plain call through both gets its own answer. */
async function livenessProblems(): Promise<string[]> {
  const problems: string[] = [];
  if (api.proc.exitCode !== null) problems.push(`the api sidecar exited (${api.proc.exitCode})`);
  if (web.proc.exitCode !== null) problems.push(`the web sidecar exited (${web.proc.exitCode})`);
  const s = session("outbound");
  const m = marker("alive");
  const r = await call(s, { ":path": `/plain?m=${m}` });
  s.close();
  if (r.status !== 200 || !r.body.toString().includes(m)) problems.push(`the next plain call got ${r.status} ${JSON.stringify(r.body.toString())}`);
  return problems;
}

/** The sidecars are up and a plain call through both gets its own answer. */
async function stillServes(): Promise<void> {
  expect(api.proc.exitCode).toBeNull();
  expect(web.proc.exitCode).toBeNull();
  const s = session("outbound");
  const m = marker("alive");
  const r = await call(s, { ":path": `/plain?m=${m}` });
  s.close();
  expect(r.status).toBe(200);
  expect(r.body.toString()).toContain(m);
}

// ---------------------------------------------------------------------------------------
describe("malformed requests through the downgrade: a 4xx or a reset, and nothing reaches the HTTP/1.1 service", () => {
  const CASES: Record<string, (m: string) => [string, string][]> = {
    "CR LF + a header in a value": (m) => req(`/plain?m=${m}`, [["x-a", "b\r\nx-smuggled: 1"]]),
    "CR LF CR LF + a request in a value": (m) => req(`/plain?m=${m}`, [["x-a", "b\r\n\r\nGET /smuggled HTTP/1.1\r\nhost: api"]]),
    "a bare LF in a value": (m) => req(`/plain?m=${m}`, [["x-a", "b\nx-smuggled: 1"]]),
    "a bare CR in a value": (m) => req(`/plain?m=${m}`, [["x-a", "b\rx-smuggled: 1"]]),
    "NUL in a value": (m) => req(`/plain?m=${m}`, [["x-a", "b\0c"]]),
    "a space in a name": (m) => req(`/plain?m=${m}`, [["x y", "1"]]),
    "a colon in a name": (m) => req(`/plain?m=${m}`, [["x-mesh-client-id:x", "spiffe://mesh.local/ns/default/sa/admin"]]),
    "a non-token character in a name ('(')": (m) => req(`/plain?m=${m}`, [["x(y", "1"]]),
    "a byte >= 0x80 in a name": (m) => req(`/plain?m=${m}`, [["x\xe9", "1"]]),
    "an empty name": (m) => req(`/plain?m=${m}`, [["", "1"]]),
    "an upper-case name": (m) => req(`/plain?m=${m}`, [["X-Mesh-Client-Id", "spiffe://mesh.local/ns/default/sa/admin"]]),
    "transfer-encoding: chunked": (m) => req(`/plain?m=${m}`, [["transfer-encoding", "chunked"]]),
    "connection: close": (m) => req(`/plain?m=${m}`, [["connection", "close"]]),
    "upgrade: websocket": (m) => req(`/plain?m=${m}`, [["upgrade", "websocket"]]),
    "keep-alive": (m) => req(`/plain?m=${m}`, [["keep-alive", "timeout=5"]]),
    "proxy-connection": (m) => req(`/plain?m=${m}`, [["proxy-connection", "keep-alive"]]),
    "te: gzip": (m) => req(`/plain?m=${m}`, [["te", "gzip"]]),
    "content-length: 5 on a GET that ends with its HEADERS": (m) => req(`/plain?m=${m}`, [["content-length", "5"]]),
    "a non-decimal content-length (+5) on a GET without a body": (m) => req(`/plain?m=${m}`, [["content-length", "+5"]]),
    "a :path with a space and a request line": (m) => req(`/plain?m=${m} HTTP/1.1\r\nx-smuggled: 1\r\nx:`),
    "a :path with a space": (m) => req(`/plain x?m=${m}`),
    "a :path with a tab": (m) => req(`/plain\tx?m=${m}`),
    "an absolute-form :path": (m) => req(`http://api/plain?m=${m}`),
    "an authority-form :path": (m) => req(`api:80`, [["x-case", m]]),
    "a :path with a fragment": (m) => req(`/plain?m=${m}#frag`),
    "a :method with a space (a request line in it)": (m) => req(`/plain?m=${m}`, [], "GET /smuggled HTTP/1.1\r\nx:"),
    "a :method with a non-token character": (m) => req(`/plain?m=${m}`, [], "GE(T"),
    "a :method with a byte >= 0x80": (m) => req(`/plain?m=${m}`, [], "G\xc9T"),
    "an empty :method": (m) => req(`/plain?m=${m}`, [], ""),
    "a pseudo-header after a regular one": (m) => [[":method", "GET"], [":scheme", "http"], [":authority", "api"], ["x-a", "1"], [":path", `/plain?m=${m}`]],
    "two :path fields": (m) => [[":method", "GET"], [":scheme", "http"], [":path", `/plain?m=${m}`], [":path", "/admin"], [":authority", "api"]],
    "host naming another authority than :authority": (m) => req(`/plain?m=${m}`, [["host", "evil.example"]]),
    "two host fields, the second naming another authority": (m) => req(`/plain?m=${m}`, [["host", "api"], ["host", "evil.example"]]),
  };
  for (const side of SIDES) {
    test(`${side}: each of ${Object.keys(CASES).length} malformed requests is refused (4xx or reset), none reaches the service, the sidecars serve on`, async () => {
      const wrong = await notRefused(side, CASES, "bad");
      wrong.push(...(await livenessProblems()));
      expect(wrong).toEqual([]);
    });
  }
});

// ---------------------------------------------------------------------------------------
describe("a request with no :authority: its host field is held to what HTTP/1.1 takes in Host", () => {
  const CASES: Record<string, (m: string) => [string, string][]> = {
    "no :authority, a host with a space in it": (m) => [[":method", "GET"], [":scheme", "http"], [":path", `/plain?m=${m}`], ["host", "api evil.example"]],
    "no :authority, a host with a comma (two hosts)": (m) => [[":method", "GET"], [":scheme", "http"], [":path", `/plain?m=${m}`], ["host", "api,evil.example"]],
    "no :authority, a host with userinfo (api@evil.example)": (m) => [[":method", "GET"], [":scheme", "http"], [":path", `/plain?m=${m}`], ["host", "api@evil.example"]],
    "no :authority, a host with a port past 65535": (m) => [[":method", "GET"], [":scheme", "http"], [":path", `/plain?m=${m}`], ["host", "api:99999"]],
    "no :authority, a host with a path": (m) => [[":method", "GET"], [":scheme", "http"], [":path", `/plain?m=${m}`], ["host", "api/admin"]],
  };
  for (const side of SIDES) {
    test(`${side}: a host HTTP/1.1 would refuse with 400 (space, comma, userinfo, port past 65535, a path) is refused, and none reaches the service`, async () => {
      expect(await notRefused(side, CASES, "host")).toEqual([]);
    });
  }
});

// ---------------------------------------------------------------------------------------
describe("requests HTTP/2 allows, which must reach the HTTP/1.1 service as one well-formed request", () => {
  const CASES: Record<string, (m: string) => [string, string][]> = {
    // U+010D U+010A as UTF-8: a decoder that kept only the low byte of each would write CR LF.
    "a UTF-8 value whose code points end in 0x0D 0x0A (č Ċ)": (m) => req(`/plain?m=${m}`, [["x-a", "a\xc4\x8d\xc4\x8ax-smuggled: 1"]]),
    // Not malformed in HTTP/2 (RFC 9113 §8.2.1 forbids only NUL, CR, LF), but no HTTP/1.1 field may carry them: refused, or sent without them.
    "a control byte (0x01) in a value": (m) => req(`/plain?m=${m}`, [["x-a", "b\x01c"]]),
    "DEL (0x7f) in a value": (m) => req(`/plain?m=${m}`, [["x-a", "b\x7fc"]]),
    "obs-text (0xE9) in a value": (m) => req(`/plain?m=${m}`, [["x-a", "caf\xe9"]]),
    "a value with a tab inside": (m) => req(`/plain?m=${m}`, [["x-a", "a\tb"]]),
    "http2-settings (an h2c upgrade's, meaningless here)": (m) => req(`/plain?m=${m}`, [["http2-settings", "AAMAAABkAARAAAAAAAIAAAAA"]]),
    "te: trailers": (m) => req(`/plain?m=${m}`, [["te", "trailers"]]),
    "expect: 100-continue on a GET without a body": (m) => req(`/plain?m=${m}`, [["expect", "100-continue"]]),
    "host equal to :authority but in upper case": (m) => req(`/plain?m=${m}`, [["host", "API"]]),
    "an OPTIONS * request": (m) => req("*", [["x-case", m]], "OPTIONS"),
    "a lower-case method (methods are case-sensitive tokens)": (m) => req(`/plain?m=${m}`, [], "get"),
    "a :path of every visible ASCII byte HTTP/1.1 allows": (m) => req(`/plain/!$&'()*+,;=:@-._~%20?m=${m}&q="<>[]^\`{|}\\`),
  };
  for (const side of SIDES) {
    test(`${side}: each of ${Object.keys(CASES).length} unusual-but-valid requests reaches the service once, well formed, or is refused; never split or doubled`, async () => {
      const wrong: string[] = [];
      for (const [name, fields] of Object.entries(CASES)) {
        const m = marker("odd");
        const before = snapshot();
        const { verdict: v, c } = await rawCall(side, fields(m));
        await Bun.sleep(30);
        c.close();
        const reached = bytesSince(before);
        for (const p of serviceProblems(reached, callerOf(side))) wrong.push(`${name}: ${p}`);
        if (reached.length > 0 && !reached.join("").includes(m)) wrong.push(`${name}: the service's request lost its marker: ${JSON.stringify(reached.join(" | "))}`);
        const text = reached.join("");
        if (/\r\n(http2-settings|te|expect-ct|connection|keep-alive):/i.test(text)) wrong.push(`${name}: a connection-level field reached the service: ${JSON.stringify(text)}`);
        if (v === "none" || v.startsWith("status:5") || v === "status:0") wrong.push(`${name}: the client got ${v}`);
        if (v.startsWith("status:2") && reached.length === 0) wrong.push(`${name}: answered ${v} without the service`);
      }
      expect(wrong).toEqual([]);
    });
  }
});

// ---------------------------------------------------------------------------------------
describe("a GET with content-length: 0 (valid: RFC 9110 §8.6)", () => {
  for (const side of SIDES) {
    test(`${side}: reaches the service once as a bodiless request and is answered 200, not an error`, async () => {
      const m = marker("get-cl0");
      const before = snapshot();
      const { verdict: v, c } = await rawCall(side, req(`/plain?m=${m}`, [["content-length", "0"]]));
      const answer = c.of(T.DATA, 1).map((f) => f.payload.toString("latin1")).join("");
      c.close();
      await Bun.sleep(30);
      const got = requestsSince(before).filter((r) => r.head.includes(m));
      expect({ verdict: v, answer: v === "status:200" ? "(the service's)" : answer, atService: got.length, problems: serviceProblems(bytesSince(before), callerOf(side)) }).toEqual({
        verdict: "status:200",
        answer: "(the service's)",
        atService: 1,
        problems: [],
      });
    });
  }
});

// ---------------------------------------------------------------------------------------
describe("a GET or HEAD with a body: refused, as the HTTP/1.1 listener refuses one (few services read it alike)", () => {
  for (const side of SIDES) {
    for (const [how, fields, data] of [
      ["content-length 5 and 5 bytes", [["content-length", "5"]], [Buffer.from("hello")]],
      ["no length, then 5 bytes", [], [Buffer.from("hello")]],
      ["no length, a request line in the body", [], [Buffer.from("GET /smuggled HTTP/1.1\r\nhost: api\r\n\r\n", "latin1")]],
    ] as [string, [string, string][], Buffer[]][])
      test(`${side}: ${how}: 400 or a reset, and the service never sees a body or a framing for one`, async () => {
        const m = marker("get-body");
        const before = snapshot();
        const { verdict: v, c } = await rawCall(side, req(`/plain?m=${m}`, fields), data);
        await Bun.sleep(50);
        c.close();
        const text = bytesSince(before).join("");
        expect({ verdict: v, refused: refused(v), framing: /\r\n(transfer-encoding|content-length):/i.test(text), smuggled: text.includes("/smuggled") }).toEqual({ verdict: v, refused: true, framing: false, smuggled: false });
        if (how.startsWith("content-length")) expect(v).toBe("status:400");
      });

    test(`${side}: its HEADERS, then an empty DATA that ends the stream: the service gets a bodiless GET and answers 200`, async () => {
      const m = marker("get-empty-data");
      const before = snapshot();
      const { verdict: v, c } = await rawCall(side, req(`/plain?m=${m}`), [Buffer.alloc(0)]);
      c.close();
      const got = requestsSince(before).filter((r) => r.head.includes(m));
      expect({ verdict: v, atService: got.length, framing: got.map((r) => /\r\n(transfer-encoding|content-length):/i.test(r.head)), problems: serviceProblems(bytesSince(before), callerOf(side)) }).toEqual({ verdict: "status:200", atService: 1, framing: [false], problems: [] });
    });
  }
});

// ---------------------------------------------------------------------------------------
describe("identity through the downgrade", () => {
  const FORGED: [string, string][] = [
    ["x-mesh-client-id", "spiffe://mesh.local/ns/default/sa/admin"],
    ["x_mesh_client_id", "spiffe://mesh.local/ns/default/sa/admin"],
    ["x.mesh.client.id", "spiffe://mesh.local/ns/default/sa/admin"],
    ["x~mesh~client~id", "spiffe://mesh.local/ns/default/sa/admin"],
    ["l5d-client-id", "admin.default.serviceaccount.identity.mesh.local"],
    ["l5d_client_id", "admin.default.serviceaccount.identity.mesh.local"],
    ["x-forwarded-client-cert", "By=spiffe://mesh.local/ns/default/sa/api;URI=spiffe://mesh.local/ns/default/sa/admin"],
    ["x_forwarded_client_cert", "URI=spiffe://mesh.local/ns/default/sa/admin"],
    ["x-mesh-tunnel", "00000000-0000-0000-0000-000000000000"],
  ];
  for (const side of SIDES) {
    test(`${side}: forged identity headers in every spelling never reach the service; it sees exactly one x-mesh-client-id, the caller's (${side === "outbound" ? "web" : "peer"})`, async () => {
      const m = marker("forged");
      const before = snapshot();
      const { verdict: v, c } = await rawCall(side, req(`/plain?m=${m}`, FORGED));
      c.close();
      await Bun.sleep(50);
      expect(v).toBe("status:200");
      const reached = bytesSince(before);
      expect(serviceProblems(reached, callerOf(side))).toEqual([]);
      expect(reached.join("")).toContain(m);
    });
  }

  for (const side of SIDES) {
    test(`${side}: identity fields in the client's request trailers never reach the service (no chunked trailer section carries them)`, async () => {
      const m = marker("trailers");
      const before = snapshot();
      const c = await openRaw(side);
      c.write(headerFrames(1, block(req(`/plain?m=${m}`, [["te", "trailers"]], "POST")), false));
      c.write(frame(T.DATA, 0, 1, Buffer.from("abc")));
      c.write(headerFrames(1, block([["x-mesh-client-id", "spiffe://mesh.local/ns/default/sa/admin"], ["x_forwarded_client_cert", "URI=spiffe://mesh.local/ns/default/sa/admin"]]), true));
      await eventually(() => c.ending(1) !== "open", 2000);
      const v = verdict(c, 1);
      c.close();
      await Bun.sleep(30);
      const text = bytesSince(before).join("");
      expect({ answered: v === "status:200" || refused(v), admin: text.includes("sa/admin"), problems: serviceProblems(bytesSince(before), callerOf(side)) }).toEqual({ answered: true, admin: false, problems: [] });
    });
  }

  test("node:http2 client through the outbound: forged copies removed; the service sees web", async () => {
    const s = session("outbound");
    const m = marker("forged-node");
    const before = snapshot();
    const r = await call(s, { ":path": `/plain?m=${m}`, ...Object.fromEntries(FORGED) });
    s.close();
    expect(r.status).toBe(200);
    expect(serviceProblems(bytesSince(before), WEB)).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------
describe("request bodies: the service gets exactly what its head announced, or a cut connection", () => {
  for (const side of SIDES) {
    test(`${side}: content-length 3 with 40 bytes of DATA (a request after the 3rd): not 2xx; the service never sees the bytes past 3`, async () => {
      const m = marker("cl-short");
      const before = snapshot();
      const { verdict: v, c } = await rawCall(side, req(`/plain?m=${m}`, [["content-length", "3"]], "POST"), [Buffer.from("abcGET /smuggled HTTP/1.1\r\nhost: api\r\n\r\n", "latin1")]);
      await Bun.sleep(100);
      c.close();
      const text = bytesSince(before).join("");
      expect({ verdict: v, refused: refused(v), smuggled: text.includes("/smuggled"), problems: serviceProblems(bytesSince(before), callerOf(side)) }).toEqual({ verdict: v, refused: true, smuggled: false, problems: [] });
    });

    test(`${side}: content-length 0 on a POST whose DATA is a whole request: not 2xx; no second request at the service`, async () => {
      const m = marker("cl-zero");
      const before = snapshot();
      const { verdict: v, c } = await rawCall(side, req(`/plain?m=${m}`, [["content-length", "0"]], "POST"), [Buffer.from("GET /smuggled HTTP/1.1\r\nhost: api\r\n\r\n", "latin1")]);
      await Bun.sleep(100);
      c.close();
      const text = bytesSince(before).join("");
      expect({ refused: refused(v), smuggled: text.includes("/smuggled") }).toEqual({ refused: true, smuggled: false });
    });

    test(`${side}: content-length 100 with 10 bytes then END_STREAM: not 2xx; the service never gets a complete request, and the next request is not read as its body`, async () => {
      const m = marker("cl-long");
      const before = snapshot();
      const { verdict: v, c } = await rawCall(side, req(`/plain?m=${m}`, [["content-length", "100"]], "POST"), [Buffer.from("0123456789")]);
      await Bun.sleep(100);
      c.close();
      const complete = requestsSince(before).filter((r) => r.head.includes(m));
      // The next request must start a message of its own, not fill the 90 missing bytes.
      const s = session("outbound");
      const next = marker("after-cl-long");
      const r = await call(s, { ":path": `/plain?m=${next}` });
      s.close();
      expect({ refused: refused(v), completeAtService: complete.length, next: r.status, nextOwnAnswer: r.body.toString().includes(next) }).toEqual({ refused: true, completeAtService: 0, next: 200, nextOwnAnswer: true });
    });

    test(`${side}: two content-length fields that disagree (3 and 8) with 8 bytes: not 2xx (RFC 9110 §8.6), no second request at the service`, async () => {
      const m = marker("cl-two");
      const before = snapshot();
      const { verdict: v, c } = await rawCall(side, req(`/plain?m=${m}`, [["content-length", "3"], ["content-length", "8"]], "POST"), [Buffer.from("abcdefgh")]);
      await Bun.sleep(100);
      c.close();
      const got = requestsSince(before).filter((r) => r.head.includes(m)).map((r) => ({ head: r.head, body: r.body.toString("latin1") }));
      expect({ verdict: v, refused: refused(v), atService: got }).toEqual({ verdict: v, refused: true, atService: [] });
    });

    test(`${side}: a body without a length that looks like chunked framing and a second request goes chunked around it: one request, its body exactly the bytes sent`, async () => {
      const m = marker("chunky");
      const data = Buffer.from("5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nhost: api\r\n\r\n", "latin1");
      const before = snapshot();
      const { verdict: v, c } = await rawCall(side, req(`/plain?m=${m}`, [], "POST"), [data.subarray(0, 10), data.subarray(10)]);
      c.close();
      const got = requestsSince(before);
      expect(v).toBe("status:200");
      expect(got.map((r) => targetOf(r))).toEqual([`/plain?m=${m}`]);
      expect(got[0]!.body.toString("latin1")).toBe(data.toString("latin1"));
      // (The body holds a request line by design: only the heads are checked.)
      expect(serviceProblems(got.map((x) => x.head), callerOf(side))).toEqual([]);
    });

    test(`${side}: a stream reset mid-body (no length: chunked) never reaches the service as a complete request: no terminating 0-chunk, its connection cut`, async () => {
      const m = marker("rst-chunked");
      const before = snapshot();
      // Two pieces: the last one received waits for END_STREAM (http1-upstream.ts), so the first is what reaches the service.
      const { c } = await rawCall(side, req(`/hold?m=${m}`, [], "POST"), [Buffer.from("part-one"), Buffer.from("part-two")], { end: false, waitMs: 300 });
      await eventually(() => bytesSince(before).join("").includes("part-one"), 2000);
      c.write(rstFrame(1));
      const closedBefore = svc.closed;
      await eventually(() => svc.closed > closedBefore, 2000);
      await Bun.sleep(100);
      c.close();
      const text = bytesSince(before).join("");
      const afterHead = text.slice(text.indexOf("\r\n\r\n") + 4);
      expect({ reachedHead: text.includes(m), bodyBytes: afterHead, complete: requestsSince(before).some((r) => r.head.includes(m)), connectionCut: svc.closed > closedBefore }).toEqual({
        reachedHead: true,
        bodyBytes: "8\r\npart-one\r\n",
        complete: false,
        connectionCut: true,
      });
    });

    test(`${side}: a stream reset mid-body (content-length 100, 16 sent) never reaches the service as complete; its connection cut`, async () => {
      const m = marker("rst-length");
      const before = snapshot();
      const { c } = await rawCall(side, req(`/hold?m=${m}`, [["content-length", "100"]], "POST"), [Buffer.from("part-one"), Buffer.from("part-two")], { end: false, waitMs: 300 });
      await eventually(() => bytesSince(before).join("").includes("part-one"), 2000);
      const closedBefore = svc.closed;
      c.write(rstFrame(1));
      await eventually(() => svc.closed > closedBefore, 2000);
      c.close();
      const text = bytesSince(before).join("");
      expect({ bodyBytes: text.slice(text.indexOf("\r\n\r\n") + 4), connectionCut: svc.closed > closedBefore }).toEqual({ bodyBytes: "part-one", connectionCut: true });
    });
  }

  test("the caller's whole connection dropped mid-body (outbound): the service gets no terminating 0-chunk, its connection is cut", async () => {
    const m = marker("drop-chunked");
    const before = snapshot();
    const { c } = await rawCall("outbound", req(`/hold?m=${m}`, [], "POST"), [Buffer.from("part-one")], { end: false, waitMs: 300 });
    await eventually(() => bytesSince(before).join("").includes("part-one"), 2000);
    const closedBefore = svc.closed;
    c.sock.destroy();
    await eventually(() => svc.closed > closedBefore, 3000);
    const text = bytesSince(before).join("");
    expect({ terminated: text.includes("0\r\n\r\n"), connectionCut: svc.closed > closedBefore }).toEqual({ terminated: false, connectionCut: true });
  });

  test("a body sent slowly (10 pieces, 150 ms apart, no length) arrives whole, chunked, once", async () => {
    const s = session("outbound");
    const m = marker("slow-body");
    const pieces = Array.from({ length: 10 }, (_, i) => Buffer.alloc(1000, 97 + i));
    const before = snapshot();
    const r = await call(s, { ":method": "POST", ":path": `/plain?m=${m}` }, pieces, { gapMs: 150, waitMs: 8000 });
    s.close();
    const got = requestsSince(before).filter((x) => x.head.includes(m));
    expect(r.status).toBe(200);
    expect(got.map((x) => x.body.equals(Buffer.concat(pieces)))).toEqual([true]);
  });

  test("expect: 100-continue with a body the client holds back for a second: one final answer, the body whole at the service", async () => {
    const m = marker("expect");
    const before = snapshot();
    const { c } = await rawCall("outbound", req(`/plain?m=${m}`, [["expect", "100-continue"], ["content-length", "5"]], "POST"), [], { end: false, waitMs: 1000 });
    const interim = c.of(T.HEADERS, 1).length;
    c.write(frame(T.DATA, F.END_STREAM, 1, Buffer.from("hello")));
    await eventually(() => c.ending(1) !== "open", 3000);
    const v = verdict(c, 1);
    c.close();
    const got = requestsSince(before).filter((x) => x.head.includes(m));
    // (Whether a 100 came back first is not asserted: `interim` HEADERS frames arrived before the body.)
    expect({ final: c.of(T.HEADERS, 1).length >= 1 && v !== "status:100", bodies: got.map((x) => x.body.toString()) }).toEqual({ final: true, bodies: ["hello"] });
    void interim;
  });

  test("a body over --max-body-size without a length (2 MiB, limit 1 MiB): 413 or reset; the service never gets a complete request", async () => {
    const s = session("outbound");
    const m = marker("too-big");
    const before = snapshot();
    const r = await call(s, { ":method": "POST", ":path": `/plain?m=${m}` }, Array.from({ length: 32 }, () => Buffer.alloc(64 * 1024, 98)), { waitMs: 5000 });
    s.close();
    await Bun.sleep(100);
    const got = requestsSince(before).filter((x) => x.head.includes(m));
    expect({ refused: r.status === 413 || r.reset, completeAtService: got.length }).toEqual({ refused: true, completeAtService: 0 });
  });
});

// ---------------------------------------------------------------------------------------
describe("responses from the HTTP/1.1 service: correct, or an error; never malformed, never a truncated body that looks complete", () => {
  /** A call to /resp/<name> through the outbound, then a plain call: whether it went on the same HTTP/1.1 connection, and got its own answer. */
  async function respCase(name: string, method = "GET", side: Side = "outbound") {
    const s = session(side);
    const before = snapshot();
    const r = await call(s, { ":method": method, ":path": `/resp/${name}` }, undefined, { waitMs: 4000 });
    const caseConn = requestsSince(before).find((x) => targetOf(x) === `/resp/${name}`)?.conn;
    await Bun.sleep(80);
    const m = marker("next");
    const next = await call(s, { ":path": `/plain?m=${m}` });
    s.close();
    const nextConn = svc.requests.find((x) => x.head.includes(m))?.conn;
    return { r, next, reused: caseConn !== undefined && caseConn === nextConn, nextOwn: next.status === 200 && next.body.toString().includes(m) };
  }

  test("Content-Length and Transfer-Encoding both: not relayed as a 2xx; the connection is not reused", async () => {
    const { r, reused, nextOwn } = await respCase("cl-and-te");
    expect({ status: r.status, body: r.body.toString(), open: r.open }).toEqual({ status: 502, body: expect.not.stringContaining("hello") as unknown as string, open: false });
    expect({ reused, nextOwn }).toEqual({ reused: false, nextOwn: true });
  });

  for (const name of ["extra-bytes", "extra-bytes-later"]) {
    test(`bytes after the body (a second response, ${name === "extra-bytes" ? "in the same read" : "30 ms later"}): the client gets "ok"; the next call is not answered with them; the connection is not reused`, async () => {
      const { r, next, reused, nextOwn } = await respCase(name);
      expect({ status: r.status, body: r.body.toString() }).toEqual({ status: 200, body: "ok" });
      expect({ reused, nextOwn, nextBody: next.body.toString().includes("smuggled") }).toEqual({ reused: false, nextOwn: true, nextBody: false });
    });
  }

  for (const [name, how] of [
    ["chunked-cut-rst", "a chunked body cut short (connection reset)"],
    ["chunked-cut-fin", "a chunked body cut short (FIN, no 0-chunk)"],
    ["length-cut-fin", "a Content-Length body cut short (5 of 100, FIN)"],
    ["close-delimited-cut-rst", "a close-delimited body ended by a reset, not a FIN"],
  ] as const) {
    test(`${how}: the client's stream is reset, never ended as complete`, async () => {
      const { r, nextOwn } = await respCase(name);
      expect({ status: r.status, reset: r.reset, open: r.open, body: r.body.toString() }).toEqual({ status: 200, reset: true, open: false, body: "hello" });
      expect(nextOwn).toBe(true);
    });
  }

  test("Connection: close on a keep-alive connection left open: the answer is relayed without it, and the connection is never reused", async () => {
    const { r, reused, nextOwn } = await respCase("connection-close");
    expect({ status: r.status, body: r.body.toString(), connection: r.headers.connection }).toEqual({ status: 200, body: "ok", connection: undefined });
    expect({ reused, nextOwn }).toEqual({ reused: false, nextOwn: true });
  });

  test("100 Continue and 103 Early Hints before the final 200: the client gets the final response whole", async () => {
    const { r, nextOwn } = await respCase("interim");
    expect({ status: r.status, body: r.body.toString(), reset: r.reset }).toEqual({ status: 200, body: "final", reset: false });
    expect(nextOwn).toBe(true);
  });

  test("a 204 with Content-Length 5 and a body: the client gets a 204 with no body and no content-length claiming one; the connection is not reused", async () => {
    const { r, reused, nextOwn } = await respCase("204-with-body");
    const cl = r.headers["content-length"];
    // curl (nghttp2) refuses a 204 whose content-length is not 0 (RFC 9110 §8.6) as a malformed response.
    const curl = Bun.spawn(["curl", "-sS", "--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: api", `http://127.0.0.1:${web.ports.outbound}/resp/204-with-body`], { stdout: "pipe", stderr: "pipe" });
    const [curlOut, curlErr, curlCode] = await Promise.all([new Response(curl.stdout).text(), new Response(curl.stderr).text(), curl.exited]);
    expect({ status: r.status, body: r.body.toString(), contentLength: cl === undefined || cl === "0" ? "none or 0" : cl, reset: r.reset, curl: `${curlCode} ${curlOut} ${curlErr.trim()}` }).toEqual({
      status: 204,
      body: "",
      contentLength: "none or 0",
      reset: false,
      curl: "0 204 ",
    });
    expect({ reused, nextOwn }).toEqual({ reused: false, nextOwn: true });
  });

  test("a 304 with a body: the client gets a 304 with no body; the connection is not reused", async () => {
    const { r, reused, nextOwn } = await respCase("304-with-body");
    expect({ status: r.status, body: r.body.toString(), reset: r.reset }).toEqual({ status: 304, body: "", reset: false });
    expect({ reused, nextOwn }).toEqual({ reused: false, nextOwn: true });
  });

  test("HEAD answered with Content-Length 1000 and no body: 200, the length kept, no body, ended cleanly; the next call is fine", async () => {
    const { r, nextOwn } = await respCase("head", "HEAD");
    expect({ status: r.status, body: r.body.byteLength, reset: r.reset, open: r.open }).toEqual({ status: 200, body: 0, reset: false, open: false });
    expect(nextOwn).toBe(true);
  });

  test("HEAD answered with a body (a response's worth of bytes): 200, no body; the next call is not answered with those bytes", async () => {
    const { r, next, nextOwn, reused } = await respCase("head-with-body", "HEAD");
    expect({ status: r.status, body: r.body.byteLength }).toEqual({ status: 200, body: 0 });
    expect({ nextOwn, smuggled: next.body.toString().includes("smuggled"), reused }).toEqual({ nextOwn: true, smuggled: false, reused: false });
  });

  test("two Set-Cookie fields stay two, one with a comma inside kept whole", async () => {
    const { r } = await respCase("set-cookies");
    expect(r.headers["set-cookie"]).toEqual(["a=1; Path=/", "b=2, c=3"]);
  });

  test("fields HTTP/2 forbids (connection, keep-alive, upgrade, proxy-connection, transfer-encoding, te, trailer) and what Connection lists stay behind; the body is whole", async () => {
    const { r } = await respCase("forbidden-headers");
    const leaked = ["connection", "keep-alive", "upgrade", "proxy-connection", "transfer-encoding", "te", "trailer", "x-secret"].filter((n) => r.headers[n] !== undefined);
    expect({ status: r.status, body: r.body.toString(), leaked, kept: r.headers["x-kept"] }).toEqual({ status: 200, body: "ok", leaked: [], kept: "yes" });
  });

  test("a Host field in the response (which node:http2 refuses to send): the client still gets an answer or a reset, never a stream left hanging", async () => {
    const { r, nextOwn } = await respCase("host-header");
    expect({ open: r.open, answered: r.status !== 0 || r.reset }).toEqual({ open: false, answered: true });
    if (r.status === 200) expect(r.body.toString()).toBe("ok");
    expect(nextOwn).toBe(true);
  });

  for (const [name, how] of [
    ["dup-content-length", "two identical Content-Length fields"],
    ["list-content-length", "Content-Length: 2, 2"],
  ] as const) {
    for (const side of SIDES) {
      test(`${side}: ${how} (RFC 9110 allows as one): the client gets 200 "ok", its content-length a number (or none), not a 502`, async () => {
        const { r } = await respCase(name, "GET", side);
        expect({ status: r.status, body: r.body.toString(), open: r.open, error: r.error, contentLength: r.headers["content-length"] ?? "2" }).toEqual({ status: 200, body: "ok", open: false, error: "", contentLength: "2" });
      });
    }
  }

  test("chunked trailers from the service carrying identity fields: the body whole, the trailer fields not relayed", async () => {
    const { r } = await respCase("chunked-trailers");
    expect({ status: r.status, body: r.body.toString(), reset: r.reset, id: r.headers["x-mesh-client-id"] }).toEqual({ status: 200, body: "ok", reset: false, id: undefined });
  });

  test("identity fields in the response are not relayed to the caller", async () => {
    const { r } = await respCase("identity-in-response");
    expect({ status: r.status, id: r.headers["x-mesh-client-id"], l5d: r.headers["l5d_client_id"] }).toEqual({ status: 200, id: undefined, l5d: undefined });
  });

  test("101 Switching Protocols to a request that asked for none: an error (502), nothing relayed as an upgrade", async () => {
    const { r, nextOwn } = await respCase("switching-protocols");
    expect({ status: r.status, open: r.open }).toEqual({ status: 502, open: false });
    expect(nextOwn).toBe(true);
  });

  test("a 60 KiB response head: the client gets the response or an error, never a stream left hanging", async () => {
    const { r, nextOwn } = await respCase("big-head");
    expect({ open: r.open, answered: r.status !== 0 || r.reset }).toEqual({ open: false, answered: true });
    expect(nextOwn).toBe(true);
  });
});

// ---------------------------------------------------------------------------------------
describe("authorization holds for the translated call", () => {
  const PATHS = ["/admin", "/admin/x", "/x/../admin", "/%61dmin", "//admin", "/./admin", "/admin?x=1", "/x%2F..%2Fadmin", "/x\\..\\admin"];
  for (const side of SIDES) {
    test(`${side}: a deny on /admin refuses /admin and every path that normalizes into it (403 or 400); the service sees none`, async () => {
      const before = snapshot();
      const statuses: Record<string, string> = {};
      for (const path of PATHS) {
        const { verdict: v, c } = await rawCall(side, req(path));
        c.close();
        statuses[path] = v;
      }
      await Bun.sleep(50);
      expect(Object.entries(statuses).filter(([, v]) => !refused(v))).toEqual([]);
      expect(bytesSince(before)).toEqual([]);
    });
  }
});

// ---------------------------------------------------------------------------------------
describe("resources", () => {
  const fds = (pid: number) => {
    try {
      return readdirSync(`/proc/${pid}/fd`).length;
    } catch {
      return -1;
    }
  };

  test("100 streams at once to a slow HTTP/1.1 service: all answered, at most 100 HTTP/1.1 connections, descriptors bounded, idle ones reused for the next calls", async () => {
    const fdsBefore = fds(api.proc.pid);
    const before = snapshot();
    const s = session("outbound");
    let peakFds = 0;
    const sampler = setInterval(() => (peakFds = Math.max(peakFds, fds(api.proc.pid))), 50);
    const answers = await Promise.all(Array.from({ length: 100 }, (_, i) => call(s, { ":path": `/slow?i=${i}` }, undefined, { waitMs: 8000 })));
    clearInterval(sampler);
    const opened = svc.accepted - before.accepted;
    // Then 20 quick calls one after another: idle connections are reused, not more opened.
    const mid = svc.accepted;
    for (let i = 0; i < 20; i++) await call(s, { ":path": `/plain?seq=${i}` });
    const openedForSequential = svc.accepted - mid;
    s.close();
    expect({ ok: answers.filter((a) => a.status === 200).length, openedAtMost100: opened <= 100, openedForSequential: openedForSequential <= 1 }).toEqual({ ok: 100, openedAtMost100: true, openedForSequential: true });
    expect(peakFds - fdsBefore).toBeLessThan(260);
  });

  test("300 streams at once over 3 client connections, from a caller sidecar with no session to api yet: none cut by a session-level close (GOAWAY ENHANCE_YOUR_CALM), HTTP/1.1 connections bounded", async () => {
    // A caller whose first streams to api open its session: nothing has told it api's stream limit yet.
    const batch = await fx.proxy("batch", fx.echo("batch").url, fx.documents("batch", [serviceDoc("api", 80, undefined, [api.ports.inbound])]));
    const before = snapshot();
    const fdsBefore = fds(api.proc.pid);
    let peakFds = 0;
    const sampler = setInterval(() => (peakFds = Math.max(peakFds, fds(api.proc.pid))), 50);
    const sessions = [1, 2, 3].map(() => {
      const s = http2.connect(`http://127.0.0.1:${batch.ports.outbound}`);
      s.on("error", () => {});
      return s;
    });
    // Connected first, so the 300 streams reach the caller sidecar together.
    await Promise.all(sessions.map((s) => new Promise<void>((resolve) => (s.connecting === false ? resolve() : s.once("connect", () => resolve())))));
    const answers = await Promise.all(sessions.flatMap((s) => Array.from({ length: 100 }, (_, i) => call(s, { ":path": `/slow?i=${i}` }, undefined, { waitMs: 9000 }))));
    clearInterval(sampler);
    for (const s of sessions) s.close();
    const outcomes: Record<string, number> = {};
    for (const a of answers) {
      const key = a.status === 200 ? "200" : `${a.status} ${a.body.toString().trim().replace(/spiffe:\S+|\d{4,}/g, "…")}`;
      outcomes[key] = (outcomes[key] ?? 0) + 1;
    }
    const opened = svc.accepted - before.accepted;
    expect({ hanging: answers.filter((a) => a.open).length, openedAtMost300: opened <= 300, fdsBounded: peakFds - fdsBefore < 400 }).toEqual({ hanging: 0, openedAtMost300: true, fdsBounded: true });
    // Refusing the excess is fine; cutting calls already running (GOAWAY ENHANCE_YOUR_CALM on the shared session) is not.
    expect(Object.entries(outcomes).filter(([k]) => /Session closed/.test(k))).toEqual([]);
    // The calls that waited for the new session's SETTINGS shared one set of listeners on it.
    expect(batch.stderr()).not.toContain("MaxListenersExceeded");
  });

  test("a client that never reads a 256 MiB response (window 0): the service is held to a few windows, sidecar memory bounded; its close ends the service's side", async () => {
    const rss = rssMiB(api.proc.pid) + rssMiB(web.proc.pid);
    const written = huge.written;
    const c = await RawH2.plain(web.ports.outbound, [[4, 0]]);
    c.headers(1, req("/huge"));
    await Bun.sleep(2000);
    const stalled = huge.written - written;
    const grew = rssMiB(api.proc.pid) + rssMiB(web.proc.pid) - rss;
    expect(c.dataBytes(1)).toBe(0);
    expect(stalled).toBeGreaterThan(0);
    expect(stalled).toBeLessThan(48 * 2 ** 20);
    expect(grew).toBeLessThan(96);
    c.close();
    expect(await eventually(() => huge.open === 0, 4000)).toBe(true);
    await stillServes();
  });
});
