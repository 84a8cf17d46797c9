/**
 * mesh's own HTTP/2 server (src/proxy/h2/wire/server-session.ts, server-stream.ts, behind
 * H2Server on an H1Listener), checked two ways:
 *
 *  - real clients (nghttp, h2load, curl) against a small echo/serve handler: a strict
 *    HPACK decoder with a header table of 0, tiny flow-control windows both ways, 1 MiB up
 *    and down, response trailers, and 2000 multiplexed requests;
 *  - raw frames (test/helpers/raw-h2.ts) for RFC 9113 conformance, asserting the exact
 *    frames that come back: the server's preface, PING, CONTINUATION, padding, PRIORITY,
 *    content-length, request trailers, flow control, stream ids, the stream limit, frame
 *    size, the client preface, large response heads, a response before the request ended,
 *    and the GOAWAY of a retired (or stopped) server.
 *
 * Everything is on 127.0.0.1, in-process; every socket, process and listener is closed by
 * its handle.
 */
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import type { IncomingHttpHeaders } from "node:http2";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { H2Server } from "../../../src/proxy/h2/h2-server.ts";
import { HpackDecoder } from "../../../src/proxy/h2/wire/hpack.ts";
import type { H2ServerStream } from "../../../src/proxy/h2/wire/server-stream.ts";
import { H1Listener } from "../../../src/proxy/transport/h1-server/listener.ts";
import { block, F, frame, PREFACE, RawH2, request, settings, T, type Frame } from "../../helpers/raw-h2.ts";
import { eventually } from "../../helpers/wait.ts";

const AUTHORITY = "h2.test";
/** Frame type and flags raw-h2.ts does not name. */
const PRIORITY = 2;
const PADDED = 0x8;
const PRIORITY_FLAG = 0x20;
/** RFC 9113 §7 error codes. */
const E = { NO_ERROR: 0, PROTOCOL_ERROR: 1, FLOW_CONTROL_ERROR: 3, FRAME_SIZE_ERROR: 6, REFUSED_STREAM: 7, CANCEL: 8 } as const;
/** RFC 9113 §6.5.2 setting ids. */
const S = { HEADER_TABLE_SIZE: 1, MAX_CONCURRENT_STREAMS: 3, INITIAL_WINDOW_SIZE: 4, MAX_FRAME_SIZE: 5, MAX_HEADER_LIST_SIZE: 6 } as const;

/** What /big serves: byte i is i % 251, so a missing, repeated or reordered chunk shows. */
const PATTERN = Buffer.alloc(4 << 20);
for (let i = 0; i < PATTERN.byteLength; i++) PATTERN[i] = i % 251;

const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

// ---------------------------------------------------------------------------------------
// The server and its handler
// ---------------------------------------------------------------------------------------

/** One stream as its handler saw it: what the request body did ("data", "end", "gone"). */
interface Seen {
  tag: string;
  path: string;
  events: string[];
  bytes: number;
}

interface Served {
  h2: H2Server;
  listener: H1Listener;
  port: number;
  /** onRefused's reasons, in order. */
  refused: string[];
  /** Connections handed to H2Server.accept. */
  accepted: number;
  seen: Seen[];
  /** /hold streams by x-tag, for the test to answer (or not). */
  held: Map<string, H2ServerStream>;
}

/**
 * Routes by :path. /echo: answers at once and echoes the body as it comes (pausing while
 * write() says wait), then trailers x-sum (sha-256 of the body) and x-bytes. /big?n=N: N
 * bytes of PATTERN, honouring write()'s backpressure. /headers: the request headers as
 * JSON. /hello?name=X: "hello X". /sink: reads the body, answers its length at its end.
 * /hold: reads the body, never answers (the test may, through `held`). /paused: pauses
 * the stream, never answers. /noread: answers at once without reading the body.
 * /bigheader?n=N: a head with an N-byte x-big field.
 */
function route(fx: Served, stream: H2ServerStream, headers: IncomingHttpHeaders): void {
  const url = new URL(String(headers[":path"]), "http://x");
  const rec: Seen = { tag: String(headers["x-tag"] ?? ""), path: url.pathname, events: [], bytes: 0 };
  fx.seen.push(rec);
  const log = {
    data(chunk: Buffer) {
      rec.bytes += chunk.byteLength;
      rec.events.push("data");
    },
    end() {
      rec.events.push("end");
    },
    drain() {},
    gone() {
      rec.events.push("gone");
    },
  };
  const text = (body: string, type = "text/plain") => {
    const b = Buffer.from(body);
    stream.respond({ ":status": 200, "content-type": type, "content-length": b.byteLength });
    stream.write(b);
    stream.end();
  };
  switch (url.pathname) {
    case "/echo": {
      const hash = createHash("sha256");
      stream.respond({ ":status": 200, "content-type": "application/octet-stream" });
      stream.handle({
        data(chunk) {
          rec.bytes += chunk.byteLength;
          hash.update(chunk);
          if (!stream.write(Buffer.from(chunk))) stream.pause();
        },
        end() {
          rec.events.push("end");
          stream.end({ "x-sum": hash.digest("hex"), "x-bytes": rec.bytes });
        },
        drain() {
          stream.resume();
        },
        gone: log.gone,
      });
      return;
    }
    case "/big": {
      const n = Math.min(Number(url.searchParams.get("n") ?? 0), PATTERN.byteLength);
      stream.respond({ ":status": 200, "content-type": "application/octet-stream", "content-length": n });
      let sent = 0;
      const pump = () => {
        while (sent < n) {
          const len = Math.min(16_384, n - sent);
          const ok = stream.write(PATTERN.subarray(sent, sent + len));
          sent += len;
          if (!ok) return;
        }
        stream.end();
      };
      stream.handle({ ...log, drain: pump });
      pump();
      return;
    }
    case "/headers":
      stream.handle(log);
      return text(JSON.stringify(headers), "application/json");
    case "/hello":
      stream.handle(log);
      return text(`hello ${url.searchParams.get("name")}\n`);
    case "/sink":
      stream.handle({
        ...log,
        end() {
          rec.events.push("end");
          text(String(rec.bytes));
        },
      });
      return;
    case "/hold":
      stream.handle(log);
      fx.held.set(rec.tag, stream);
      return;
    case "/paused":
      stream.pause();
      stream.handle(log);
      return;
    case "/noread":
      return text("answered without reading the body");
    case "/bigheader": {
      stream.handle(log);
      stream.respond({ ":status": 200, "x-big": bigValue(Number(url.searchParams.get("n") ?? 0)) }, true);
      return;
    }
    default:
      stream.respond({ ":status": 404 }, true);
  }
}

function bigValue(n: number): string {
  let s = "";
  for (let i = 0; i < n; i++) s += String.fromCharCode(0x61 + (i % 26));
  return s;
}

function serve(): Served {
  const fx = { refused: [] as string[], accepted: 0, seen: [] as Seen[], held: new Map<string, H2ServerStream>() } as Served;
  fx.h2 = new H2Server({ callerRequired: false, onRefused: (reason) => fx.refused.push(reason), onStream: (stream, headers) => route(fx, stream, headers) });
  fx.listener = new H1Listener({
    hostname: "127.0.0.1",
    port: 0,
    limits: { maxBodyBytes: 0, idleTimeoutS: 30 },
    handler: {
      request: () => {},
      refused: () => {},
      upgrade: (c) => c.shutdown(true),
      http2: (c, initial) => {
        fx.accepted++;
        fx.h2.accept(c, initial);
      },
    },
    events: { onRefused: () => {}, onOpen: () => {} },
  });
  fx.port = fx.listener.listen();
  return fx;
}

// ---------------------------------------------------------------------------------------
// Raw-frame helpers
// ---------------------------------------------------------------------------------------

const clients: RawH2[] = [];
async function connect(port: number, initial: [number, number][] = []): Promise<RawH2> {
  const c = await RawH2.plain(port, initial);
  clients.push(c);
  return c;
}

let pings = 0;
/** A PING and its ACK: every frame sent before it has been read and answered. */
async function barrier(c: RawH2): Promise<boolean> {
  const payload = Buffer.alloc(8);
  payload.write("bar", 0, "latin1");
  payload.writeUInt32BE(++pings, 4);
  c.write(frame(T.PING, 0, 0, payload));
  return eventually(() => c.frames.some((f) => f.type === T.PING && (f.flags & F.ACK) !== 0 && f.payload.equals(payload)), 5000);
}

function goaway(c: RawH2): { last: number; code: number; debug: string } | undefined {
  const g = c.of(T.GOAWAY)[0];
  if (g === undefined) return undefined;
  return { last: g.payload.readUInt32BE(0) & 0x7fff_ffff, code: g.payload.readUInt32BE(4), debug: g.payload.subarray(8).toString("latin1") };
}

const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
};
const windowUpdate = (stream: number, increment: number) => frame(T.WINDOW_UPDATE, 0, stream, u32(increment));
const hb = (path: string, extra: [string, string][] = [], method = "GET") => block(request(AUTHORITY, path, extra, method));

interface Block {
  stream: number;
  fields: string[];
  endStream: boolean;
  frames: number;
}
/** Every header block the connection received (HEADERS and its CONTINUATIONs), decoded in order. */
function headerBlocks(c: RawH2): Block[] {
  const decoder = new HpackDecoder();
  const out: Block[] = [];
  let first: Frame | undefined;
  let parts: Buffer[] = [];
  for (const f of c.frames) {
    if (f.type === T.HEADERS) {
      first = f;
      parts = [f.payload];
    } else if (f.type === T.CONTINUATION) parts.push(f.payload);
    else continue;
    if ((f.flags & F.END_HEADERS) !== 0 && first !== undefined) {
      out.push({ stream: first.stream, fields: decoder.decode(Buffer.concat(parts)), endStream: (first.flags & F.END_STREAM) !== 0, frames: parts.length });
      first = undefined;
    }
  }
  return out;
}
function field(fields: string[], name: string): string | undefined {
  for (let i = 0; i < fields.length; i += 2) if (fields[i] === name) return fields[i + 1];
  return undefined;
}
function responseOf(c: RawH2, stream: number): { status: string | undefined; body: Buffer; trailers: string[] | undefined } {
  const blocks = headerBlocks(c).filter((b) => b.stream === stream);
  return {
    status: blocks[0] === undefined ? undefined : field(blocks[0].fields, ":status"),
    body: Buffer.concat(c.of(T.DATA, stream).map((f) => f.payload)),
    trailers: blocks[1]?.fields,
  };
}
/** Waits for the stream's END_STREAM (or reset), then returns its response. */
async function complete(c: RawH2, stream: number): Promise<ReturnType<typeof responseOf>> {
  await eventually(() => c.ending(stream) !== "open", 10_000);
  expect(c.ending(stream)).toBe("end-stream");
  return responseOf(c, stream);
}
const seenBy = (fx: Served, tag: string) => fx.seen.find((s) => s.tag === tag);

/** A padded frame payload (RFC 9113 §6.1, §6.2): pad length, [priority], data, zero padding. */
function padded(data: Buffer, pad: number, priority?: Buffer): Buffer {
  return Buffer.concat([Buffer.from([pad]), priority ?? Buffer.alloc(0), data, Buffer.alloc(pad)]);
}

/** For a client that breaks the preface: writes `bytes`, returns the frames that came back and whether the server closed. */
async function rawExchange(port: number, bytes: Buffer): Promise<{ frames: Frame[]; closed: boolean }> {
  const sock = net.connect(port, "127.0.0.1");
  let buf = Buffer.alloc(0);
  let closed = false;
  sock.on("data", (d: Buffer) => (buf = Buffer.concat([buf, d])));
  const done = new Promise<void>((res) => sock.on("close", () => ((closed = true), res())));
  sock.on("error", () => {});
  await new Promise<void>((res, rej) => sock.once("connect", res).once("error", rej));
  sock.write(bytes);
  await Promise.race([done, Bun.sleep(5000)]);
  sock.destroy();
  const frames: Frame[] = [];
  for (let at = 0; buf.byteLength - at >= 9; ) {
    const len = buf.readUIntBE(at, 3);
    if (buf.byteLength - at < 9 + len) break;
    frames.push({ type: buf[at + 3]!, flags: buf[at + 4]!, stream: buf.readUInt32BE(at + 5) & 0x7fff_ffff, payload: buf.subarray(at + 9, at + 9 + len) });
    at += 9 + len;
  }
  return { frames, closed };
}

// ---------------------------------------------------------------------------------------
// Real-client helpers
// ---------------------------------------------------------------------------------------

async function run(cmd: string[], timeoutMs = 40_000): Promise<{ code: number; stdout: Buffer; stderr: string }> {
  const proc = Bun.spawn({ cmd, stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  const timer = setTimeout(() => proc.kill("SIGKILL"), timeoutMs);
  try {
    const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).arrayBuffer(), new Response(proc.stderr).text(), proc.exited]);
    return { code, stdout: Buffer.from(stdout), stderr };
  } finally {
    clearTimeout(timer);
  }
}

let fx: Served;
let dir: string;
beforeAll(() => {
  fx = serve();
  dir = mkdtempSync(join(tmpdir(), "h2-server-session-"));
});
afterEach(() => {
  for (const c of clients.splice(0)) c.close();
});
afterAll(() => {
  fx.listener.closeAll();
  rmSync(dir, { recursive: true, force: true });
});
const url = (path: string) => `http://127.0.0.1:${fx.port}${path}`;

// =======================================================================================
// Real clients
// =======================================================================================

describe("real clients", () => {
  test("nghttp -c 0 (header table 0, strict HPACK) reads two responses on one connection", async () => {
    const before = fx.accepted;
    const r = await run(["nghttp", "-c", "0", "-t", "20", url("/hello?name=first"), url("/hello?name=second")]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const out = r.stdout.toString();
    expect(out).toContain("hello first\n");
    expect(out).toContain("hello second\n");
    expect(fx.accepted - before).toBe(1);
  });

  test("nghttp with a 1023-byte stream window and a 4095-byte connection window downloads 1 MiB whole", async () => {
    const n = 1 << 20;
    const r = await run(["nghttp", "-w", "10", "-W", "12", "-t", "30", url(`/big?n=${n}`)]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout.byteLength).toBe(n);
    expect(sha256(r.stdout)).toBe(sha256(PATTERN.subarray(0, n)));
  });

  test("nghttp -d uploads 1 MiB to /echo and reads it back", async () => {
    const body = randomBytes(1 << 20);
    const file = join(dir, "upload.bin");
    writeFileSync(file, body);
    const r = await run(["nghttp", "-t", "30", "-d", file, url("/echo")]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout.byteLength).toBe(body.byteLength);
    expect(sha256(r.stdout)).toBe(sha256(body));
  });

  test("curl --http2-prior-knowledge: GET, and a POST whose response has trailers", async () => {
    const get = await run(["curl", "-sS", "--max-time", "20", "--http2-prior-knowledge", "-D", "-", url("/headers")]);
    expect(get.stderr).toBe("");
    expect(get.code).toBe(0);
    const text = get.stdout.toString();
    expect(text.startsWith("HTTP/2 200")).toBe(true);
    expect(text).toContain("content-type: application/json");
    const json = JSON.parse(text.slice(text.indexOf("\r\n\r\n") + 4)) as Record<string, string>;
    expect(json[":method"]).toBe("GET");
    expect(json[":path"]).toBe("/headers");

    const body = randomBytes(200_000);
    const file = join(dir, "post.bin");
    const out = join(dir, "post.out");
    const head = join(dir, "post.head");
    writeFileSync(file, body);
    const post = await run(["curl", "-sS", "--max-time", "20", "--http2-prior-knowledge", "-D", head, "-o", out, "-H", "content-type: application/octet-stream", "--data-binary", `@${file}`, url("/echo")]);
    expect(post.stderr).toBe("");
    expect(post.code).toBe(0);
    expect(sha256(readFileSync(out))).toBe(sha256(body));
    const heads = readFileSync(head, "latin1");
    expect(heads.startsWith("HTTP/2 200")).toBe(true);
    // curl writes the trailers after the head (-D).
    expect(heads).toContain(`x-sum: ${sha256(body)}`);
    expect(heads).toContain(`x-bytes: ${body.byteLength}`);
  });

  test("h2load: 2000 POSTs over 4 connections, 16 streams each, all succeed", async () => {
    const file = join(dir, "small.bin");
    writeFileSync(file, randomBytes(1000));
    const r = await run(["h2load", "-n", "2000", "-c", "4", "-m", "16", "-T", "20", "-d", file, url("/echo")], 50_000);
    expect(r.code).toBe(0);
    const out = r.stdout.toString();
    const m = /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/.exec(out);
    expect(m).not.toBeNull();
    const [, total, , done, succeeded, failed, errored, timeouts] = m!.map(Number);
    expect({ total, done, succeeded, failed, errored, timeouts }).toEqual({ total: 2000, done: 2000, succeeded: 2000, failed: 0, errored: 0, timeouts: 0 });
    expect(out).toMatch(/status codes: 2000 2xx/);
  }, 60_000);
});

// =======================================================================================
// Raw frames
// =======================================================================================

describe("connection preface and PING", () => {
  test("the server opens with SETTINGS (100 streams, 64 KiB header list), a connection WINDOW_UPDATE, and ACKs the client's SETTINGS", async () => {
    const c = await connect(fx.port);
    expect(await barrier(c)).toBe(true);
    const [first, second] = c.frames;
    expect(first?.type).toBe(T.SETTINGS);
    expect(first!.flags & F.ACK).toBe(0);
    expect(first!.stream).toBe(0);
    expect(first!.payload.byteLength % 6).toBe(0);
    const values = new Map<number, number>();
    for (let at = 0; at < first!.payload.byteLength; at += 6) values.set(first!.payload.readUInt16BE(at), first!.payload.readUInt32BE(at + 2));
    expect(values.get(S.MAX_CONCURRENT_STREAMS)).toBe(100);
    expect(values.get(S.MAX_HEADER_LIST_SIZE)).toBe(65536);
    expect(second?.type).toBe(T.WINDOW_UPDATE);
    expect(second!.stream).toBe(0);
    expect(second!.payload.byteLength).toBe(4);
    const increment = second!.payload.readUInt32BE(0);
    expect(increment).toBeGreaterThan(0);
    expect(increment).toBeLessThanOrEqual(0x7fff_ffff);
    // Exactly one ACK, for the one SETTINGS the client sent, empty, on stream 0.
    const acks = c.of(T.SETTINGS).filter((f) => (f.flags & F.ACK) !== 0);
    expect(acks).toHaveLength(1);
    expect(acks[0]!.payload.byteLength).toBe(0);
    expect(acks[0]!.stream).toBe(0);
    expect(c.frames.indexOf(acks[0]!)).toBeGreaterThan(0);
    expect(goaway(c)).toBeUndefined();
  });

  test("a PING is answered by a PING ACK with the same 8 bytes; a PING ACK is not answered", async () => {
    const c = await connect(fx.port);
    const payload = Buffer.from("mesh!ok?", "latin1");
    c.write(frame(T.PING, 0, 0, payload));
    expect(await eventually(() => c.of(T.PING).length > 0, 5000)).toBe(true);
    const [ack] = c.of(T.PING);
    expect(ack!.flags).toBe(F.ACK);
    expect(ack!.stream).toBe(0);
    expect(ack!.payload.equals(payload)).toBe(true);

    c.write(frame(T.PING, F.ACK, 0, Buffer.from("unasked!", "latin1")));
    expect(await barrier(c)).toBe(true);
    // The first ACK and the barrier's: nothing for the unasked ACK.
    expect(c.of(T.PING)).toHaveLength(2);
    expect(c.of(T.PING).some((f) => f.payload.toString("latin1") === "unasked!")).toBe(false);
    expect(goaway(c)).toBeUndefined();
  });
});

describe("header blocks: CONTINUATION, padding, priority", () => {
  test("a request split over HEADERS and 3 CONTINUATION frames (each its own write) is served", async () => {
    const c = await connect(fx.port);
    // RawH2 ACKs the server's SETTINGS when it comes: let that happen before the block starts.
    expect(await barrier(c)).toBe(true);
    const long = "x".repeat(3000);
    const b = hb("/headers", [["x-tag", "cont"], ["x-long", long]]);
    const q = Math.ceil(b.byteLength / 4);
    const parts = [0, 1, 2, 3].map((i) => b.subarray(i * q, (i + 1) * q));
    const frames = [frame(T.HEADERS, F.END_STREAM, 1, parts[0]), frame(T.CONTINUATION, 0, 1, parts[1]), frame(T.CONTINUATION, 0, 1, parts[2]), frame(T.CONTINUATION, F.END_HEADERS, 1, parts[3])];
    for (const f of frames) {
      c.write(f);
      await Bun.sleep(10);
    }
    const res = await complete(c, 1);
    expect(res.status).toBe("200");
    const json = JSON.parse(res.body.toString()) as Record<string, string>;
    expect(json["x-long"]).toBe(long);
    expect(json["x-tag"]).toBe("cont");
    expect(goaway(c)).toBeUndefined();
  });

  test("a CONTINUATION for another stream, or any other frame inside a header block, is GOAWAY PROTOCOL_ERROR", async () => {
    const open = frame(T.HEADERS, F.END_STREAM, 1, hb("/headers"));
    const intruders: [string, Buffer][] = [
      ["CONTINUATION on stream 3", frame(T.CONTINUATION, F.END_HEADERS, 3, hb("/headers"))],
      ["PING", frame(T.PING, 0, 0, Buffer.alloc(8))],
      ["DATA on the stream", frame(T.DATA, 0, 1, Buffer.from("x"))],
      ["HEADERS on stream 3", frame(T.HEADERS, F.END_HEADERS | F.END_STREAM, 3, hb("/headers"))],
      ["WINDOW_UPDATE", windowUpdate(0, 100)],
    ];
    for (const [what, intruder] of intruders) {
      const c = await connect(fx.port);
      c.write(Buffer.concat([open, intruder]));
      expect(await eventually(() => c.closed, 5000)).toBe(true);
      expect({ what, code: goaway(c)?.code }).toEqual({ what, code: E.PROTOCOL_ERROR });
      expect(c.of(T.HEADERS)).toHaveLength(0);
    }
    // A CONTINUATION with no HEADERS before it.
    const c = await connect(fx.port);
    c.write(frame(T.CONTINUATION, F.END_HEADERS, 1, hb("/headers")));
    expect(await eventually(() => c.closed, 5000)).toBe(true);
    expect(goaway(c)?.code).toBe(E.PROTOCOL_ERROR);
  });

  test("padded HEADERS and padded DATA are served without their padding", async () => {
    const c = await connect(fx.port);
    c.write(frame(T.HEADERS, F.END_STREAM | F.END_HEADERS | PADDED, 1, padded(hb("/headers", [["x-tag", "padded"]]), 37)));
    const res = await complete(c, 1);
    expect(res.status).toBe("200");
    expect((JSON.parse(res.body.toString()) as Record<string, string>)["x-tag"]).toBe("padded");

    c.write(frame(T.HEADERS, F.END_HEADERS, 3, hb("/echo", [], "POST")));
    c.write(frame(T.DATA, PADDED, 3, padded(Buffer.from("hello "), 10)));
    c.write(frame(T.DATA, PADDED, 3, padded(Buffer.alloc(0), 255))); // all padding
    c.write(frame(T.DATA, PADDED, 3, padded(Buffer.from("padded"), 0)));
    c.write(frame(T.DATA, PADDED | F.END_STREAM, 3, padded(Buffer.from(" world"), 200)));
    const echo = await complete(c, 3);
    expect(echo.status).toBe("200");
    expect(echo.body.toString()).toBe("hello padded world");
    expect(field(echo.trailers ?? [], "x-sum")).toBe(sha256(Buffer.from("hello padded world")));
    expect(goaway(c)).toBeUndefined();
  });

  test("padding longer than its frame is GOAWAY PROTOCOL_ERROR (HEADERS, DATA)", async () => {
    const h = await connect(fx.port);
    const b = hb("/headers");
    const bad = Buffer.concat([Buffer.from([b.byteLength + 1]), b]); // pad length past the rest of the frame
    h.write(frame(T.HEADERS, F.END_STREAM | F.END_HEADERS | PADDED, 1, bad));
    expect(await eventually(() => h.closed, 5000)).toBe(true);
    expect(goaway(h)?.code).toBe(E.PROTOCOL_ERROR);
    expect(h.of(T.HEADERS, 1)).toHaveLength(0);

    const d = await connect(fx.port);
    d.write(frame(T.HEADERS, F.END_HEADERS, 1, hb("/sink", [["x-tag", "pad-long"]], "POST")));
    d.write(frame(T.DATA, PADDED | F.END_STREAM, 1, Buffer.concat([Buffer.from([50]), Buffer.from("abc")])));
    expect(await eventually(() => d.closed, 5000)).toBe(true);
    expect(goaway(d)?.code).toBe(E.PROTOCOL_ERROR);
    expect(seenBy(fx, "pad-long")?.events).not.toContain("end");
  });

  test("HEADERS with the PRIORITY flag (and with PADDED too) is served; a 4-byte PRIORITY frame is RST_STREAM FRAME_SIZE_ERROR", async () => {
    const c = await connect(fx.port);
    const prio = Buffer.from([0x80, 0, 0, 0, 200]); // exclusive on stream 0, weight 201
    c.write(frame(T.HEADERS, F.END_STREAM | F.END_HEADERS | PRIORITY_FLAG, 1, Buffer.concat([prio, hb("/hello?name=prio")])));
    expect((await complete(c, 1)).body.toString()).toBe("hello prio\n");
    c.write(frame(T.HEADERS, F.END_STREAM | F.END_HEADERS | PRIORITY_FLAG | PADDED, 3, padded(hb("/hello?name=both"), 9, prio)));
    expect((await complete(c, 3)).body.toString()).toBe("hello both\n");

    c.write(frame(PRIORITY, 0, 5, Buffer.from([0, 0, 0, 1])));
    expect(await eventually(() => c.of(T.RST, 5).length > 0, 5000)).toBe(true);
    expect(c.of(T.RST, 5)[0]!.payload.readUInt32BE(0)).toBe(E.FRAME_SIZE_ERROR);
    // A well-formed PRIORITY is ignored; the connection goes on.
    c.write(frame(PRIORITY, 0, 7, Buffer.from([0, 0, 0, 1, 16])));
    c.write(frame(T.HEADERS, F.END_STREAM | F.END_HEADERS, 9, hb("/hello?name=after")));
    expect((await complete(c, 9)).body.toString()).toBe("hello after\n");
    expect(c.of(T.RST, 7)).toHaveLength(0);
    expect(goaway(c)).toBeUndefined();
  });

  test("a response head larger than the client's max frame size comes as HEADERS + CONTINUATION, END_HEADERS on the last", async () => {
    const c = await connect(fx.port);
    c.headers(1, request(AUTHORITY, "/bigheader?n=40000"));
    expect(await eventually(() => c.ending(1) !== "open", 10_000)).toBe(true);
    const mine = c.frames.filter((f) => f.stream === 1);
    expect(mine[0]!.type).toBe(T.HEADERS);
    expect(mine[0]!.flags & F.END_HEADERS).toBe(0);
    expect(mine[0]!.flags & F.END_STREAM).toBe(F.END_STREAM);
    const conts = mine.slice(1);
    expect(conts.length).toBeGreaterThanOrEqual(2);
    conts.forEach((f, i) => {
      expect(f.type).toBe(T.CONTINUATION);
      expect(f.flags & F.END_HEADERS).toBe(i === conts.length - 1 ? F.END_HEADERS : 0);
    });
    for (const f of mine) expect(f.payload.byteLength).toBeLessThanOrEqual(16_384);
    // Nothing between the block's frames (§6.10).
    const at = c.frames.indexOf(mine[0]!);
    expect(c.frames.slice(at, at + mine.length)).toEqual(mine);
    const fields = new HpackDecoder().decode(Buffer.concat(mine.map((f) => f.payload)));
    expect(field(fields, ":status")).toBe("200");
    expect(field(fields, "x-big")).toBe(bigValue(40000));

    // A client that allows larger frames gets one HEADERS frame.
    const big = await connect(fx.port, [[S.MAX_FRAME_SIZE, 65536]]);
    big.headers(1, request(AUTHORITY, "/bigheader?n=40000"));
    expect(await eventually(() => big.ending(1) !== "open", 10_000)).toBe(true);
    expect(big.of(T.CONTINUATION)).toHaveLength(0);
    const [one] = big.of(T.HEADERS, 1);
    expect(one!.flags & F.END_HEADERS).toBe(F.END_HEADERS);
    expect(field(headerBlocks(big)[0]!.fields, "x-big")).toBe(bigValue(40000));
  });
});

describe("request bodies: content-length and trailers", () => {
  test("a body longer or shorter than content-length is RST_STREAM PROTOCOL_ERROR, and the handler never sees its end", async () => {
    const c = await connect(fx.port);
    const before = fx.refused.filter((r) => r === "malformed").length;
    // Longer.
    c.write(frame(T.HEADERS, F.END_HEADERS, 1, hb("/sink", [["x-tag", "cl-long"], ["content-length", "5"]], "POST")));
    c.write(frame(T.DATA, F.END_STREAM, 1, Buffer.from("0123456789")));
    // Shorter.
    c.write(frame(T.HEADERS, F.END_HEADERS, 3, hb("/sink", [["x-tag", "cl-short"], ["content-length", "10"]], "POST")));
    c.write(frame(T.DATA, F.END_STREAM, 3, Buffer.from("01234")));
    // A content-length with no body at all (END_STREAM on HEADERS).
    c.write(frame(T.HEADERS, F.END_HEADERS | F.END_STREAM, 5, hb("/sink", [["x-tag", "cl-none"], ["content-length", "5"]], "POST")));
    // Right.
    c.write(frame(T.HEADERS, F.END_HEADERS, 7, hb("/sink", [["x-tag", "cl-right"], ["content-length", "5"]], "POST")));
    c.write(frame(T.DATA, F.END_STREAM, 7, Buffer.from("01234")));

    const res = await complete(c, 7);
    expect(res.body.toString()).toBe("5");
    for (const id of [1, 3, 5]) {
      expect({ id, outcome: c.outcome(id) }).toEqual({ id, outcome: `rst:${E.PROTOCOL_ERROR}` });
      expect(c.of(T.HEADERS, id)).toHaveLength(0);
    }
    expect(seenBy(fx, "cl-long")!.events).toEqual(["gone"]);
    expect(seenBy(fx, "cl-short")!.events).toContain("gone");
    expect(seenBy(fx, "cl-short")!.events).not.toContain("end");
    expect(seenBy(fx, "cl-none")).toBeUndefined();
    expect(seenBy(fx, "cl-right")!.events).toEqual(["data", "end"]);
    expect(fx.refused.filter((r) => r === "malformed").length - before).toBe(3);
    expect(goaway(c)).toBeUndefined();
  });

  test("request trailers (HEADERS with END_STREAM after DATA) end the body; without END_STREAM, or with a pseudo-header, RST PROTOCOL_ERROR", async () => {
    const c = await connect(fx.port);
    c.write(frame(T.HEADERS, F.END_HEADERS, 1, hb("/sink", [["x-tag", "tr-ok"]], "POST")));
    c.write(frame(T.DATA, 0, 1, Buffer.from("abc")));
    c.write(frame(T.HEADERS, F.END_HEADERS | F.END_STREAM, 1, block([["x-trailer", "1"]])));
    const ok = await complete(c, 1);
    expect(ok.status).toBe("200");
    expect(ok.body.toString()).toBe("3");
    expect(seenBy(fx, "tr-ok")!.events).toEqual(["data", "end"]);
    expect(c.of(T.RST, 1)).toHaveLength(0);

    c.write(frame(T.HEADERS, F.END_HEADERS, 3, hb("/sink", [["x-tag", "tr-open"]], "POST")));
    c.write(frame(T.DATA, 0, 3, Buffer.from("abc")));
    c.write(frame(T.HEADERS, F.END_HEADERS, 3, block([["x-trailer", "1"]])));

    c.write(frame(T.HEADERS, F.END_HEADERS, 5, hb("/sink", [["x-tag", "tr-pseudo"]], "POST")));
    c.write(frame(T.DATA, 0, 5, Buffer.from("abc")));
    c.write(frame(T.HEADERS, F.END_HEADERS | F.END_STREAM, 5, block([[":path", "/other"]])));

    expect(await eventually(() => c.of(T.RST, 3).length > 0 && c.of(T.RST, 5).length > 0, 5000)).toBe(true);
    expect(c.outcome(3)).toBe(`rst:${E.PROTOCOL_ERROR}`);
    expect(c.outcome(5)).toBe(`rst:${E.PROTOCOL_ERROR}`);
    for (const tag of ["tr-open", "tr-pseudo"]) {
      expect(seenBy(fx, tag)!.events).toEqual(["data", "gone"]);
    }
    expect(await barrier(c)).toBe(true);
    expect(goaway(c)).toBeUndefined();
  });
});

describe("flow control", () => {
  test("SETTINGS_INITIAL_WINDOW_SIZE 0: no DATA until a SETTINGS opens the window, then exactly the windows' worth, then the rest on WINDOW_UPDATE", async () => {
    const n = 100_000;
    const c = await connect(fx.port, [[S.INITIAL_WINDOW_SIZE, 0]]);
    c.headers(1, request(AUTHORITY, `/big?n=${n}`));
    expect(await eventually(() => c.of(T.HEADERS, 1).length > 0, 5000)).toBe(true);
    await Bun.sleep(50);
    expect(await barrier(c)).toBe(true);
    expect(c.of(T.DATA, 1)).toHaveLength(0);

    c.write(settings([[S.INITIAL_WINDOW_SIZE, 65_535]]));
    expect(await eventually(() => c.dataBytes(1) >= 65_535, 5000)).toBe(true);
    expect(await barrier(c)).toBe(true);
    // The stream's and the connection's windows are both 65,535.
    expect(c.dataBytes(1)).toBe(65_535);
    expect(c.ending(1)).toBe("open");

    c.write(Buffer.concat([windowUpdate(0, n), windowUpdate(1, n)]));
    const res = await complete(c, 1);
    expect(res.body.byteLength).toBe(n);
    expect(res.body.equals(PATTERN.subarray(0, n))).toBe(true);
    for (const f of c.of(T.DATA, 1)) expect(f.payload.byteLength).toBeLessThanOrEqual(16_384);
    expect(goaway(c)).toBeUndefined();
  });

  test("a WINDOW_UPDATE past 2^31-1: on the connection GOAWAY FLOW_CONTROL_ERROR, on a stream RST_STREAM FLOW_CONTROL_ERROR", async () => {
    const conn = await connect(fx.port);
    conn.write(windowUpdate(0, 0x7fff_ffff));
    expect(await eventually(() => conn.closed, 5000)).toBe(true);
    expect(goaway(conn)?.code).toBe(E.FLOW_CONTROL_ERROR);

    const s = await connect(fx.port);
    s.headers(1, request(AUTHORITY, "/hold", [["x-tag", "wu-stream"]]));
    expect(await eventually(() => seenBy(fx, "wu-stream") !== undefined, 5000)).toBe(true);
    s.write(windowUpdate(1, 0x7fff_ffff));
    expect(await eventually(() => s.of(T.RST, 1).length > 0, 5000)).toBe(true);
    expect(s.outcome(1)).toBe(`rst:${E.FLOW_CONTROL_ERROR}`);
    expect(seenBy(fx, "wu-stream")!.events).toContain("gone");
    expect(await barrier(s)).toBe(true);
    expect(goaway(s)).toBeUndefined();
  });

  test("a WINDOW_UPDATE of 0 on stream 0 is GOAWAY PROTOCOL_ERROR", async () => {
    const c = await connect(fx.port);
    c.write(windowUpdate(0, 0));
    expect(await eventually(() => c.closed, 5000)).toBe(true);
    expect(goaway(c)?.code).toBe(E.PROTOCOL_ERROR);
  });

  test("DATA past the stream's window (70,000 bytes, the handler paused) is RST_STREAM FLOW_CONTROL_ERROR; the connection lives", async () => {
    const c = await connect(fx.port);
    c.write(frame(T.HEADERS, F.END_HEADERS, 1, hb("/paused", [["x-tag", "fc-over"]], "POST")));
    const chunks: Buffer[] = [];
    for (let i = 0; i < 5; i++) chunks.push(frame(T.DATA, 0, 1, Buffer.alloc(14_000, i)));
    c.write(Buffer.concat(chunks));
    expect(await eventually(() => c.of(T.RST, 1).length > 0, 5000)).toBe(true);
    expect(c.outcome(1)).toBe(`rst:${E.FLOW_CONTROL_ERROR}`);
    expect(c.of(T.WINDOW_UPDATE, 1)).toHaveLength(0);
    expect(seenBy(fx, "fc-over")!.events).toEqual(["gone"]);
    // The connection goes on.
    c.headers(3, request(AUTHORITY, "/hello?name=still"));
    expect((await complete(c, 3)).body.toString()).toBe("hello still\n");
    expect(goaway(c)).toBeUndefined();
  });
});

describe("stream ids and the stream limit", () => {
  test("HEADERS on an even stream id is GOAWAY PROTOCOL_ERROR", async () => {
    const c = await connect(fx.port);
    c.headers(2, request(AUTHORITY, "/headers"));
    expect(await eventually(() => c.closed, 5000)).toBe(true);
    expect(goaway(c)?.code).toBe(E.PROTOCOL_ERROR);
    expect(c.of(T.HEADERS)).toHaveLength(0);
  });

  test("DATA on an idle stream (never opened, past the last) is GOAWAY PROTOCOL_ERROR", async () => {
    const c = await connect(fx.port);
    c.headers(1, request(AUTHORITY, "/hello?name=one"));
    await complete(c, 1);
    c.write(frame(T.DATA, F.END_STREAM, 9, Buffer.from("x")));
    expect(await eventually(() => c.closed, 5000)).toBe(true);
    expect(goaway(c)?.code).toBe(E.PROTOCOL_ERROR);
    expect(goaway(c)?.last).toBe(1);
  });

  test("HEADERS with a lower id than one already opened is taken as trailers of a closed stream (ignored); later streams are served", async () => {
    const c = await connect(fx.port);
    c.headers(5, request(AUTHORITY, "/hello?name=five"));
    expect((await complete(c, 5)).body.toString()).toBe("hello five\n");
    c.headers(3, request(AUTHORITY, "/hello?name=three", [["x-tag", "lower-id"]]));
    expect(await barrier(c)).toBe(true);
    expect(c.frames.filter((f) => f.stream === 3)).toHaveLength(0);
    expect(seenBy(fx, "lower-id")).toBeUndefined();
    c.headers(7, request(AUTHORITY, "/hello?name=seven"));
    expect((await complete(c, 7)).body.toString()).toBe("hello seven\n");
    expect(goaway(c)).toBeUndefined();
  });

  test("the 101st concurrent stream is RST_STREAM REFUSED_STREAM, and onRefused('streams') is told", async () => {
    const c = await connect(fx.port);
    const before = fx.refused.filter((r) => r === "streams").length;
    const frames: Buffer[] = [];
    for (let i = 0; i < 101; i++) frames.push(frame(T.HEADERS, F.END_HEADERS | F.END_STREAM, 1 + 2 * i, hb("/hold", [["x-tag", `limit-${i}`]])));
    c.write(Buffer.concat(frames));
    expect(await eventually(() => c.of(T.RST, 201).length > 0, 5000)).toBe(true);
    expect(c.outcome(201)).toBe(`rst:${E.REFUSED_STREAM}`);
    expect(await barrier(c)).toBe(true);
    expect(c.of(T.RST)).toHaveLength(1);
    expect(fx.refused.filter((r) => r === "streams").length - before).toBe(1);
    expect(seenBy(fx, "limit-100")).toBeUndefined();
    for (let i = 0; i < 100; i++) expect(seenBy(fx, `limit-${i}`)?.events).toEqual(["end"]);
    // The client goes: every held stream's handler is told.
    c.close();
    expect(await eventually(() => fx.seen.filter((s) => s.tag.startsWith("limit-") && s.events.includes("gone")).length === 100, 5000)).toBe(true);
  });
});

describe("frame size and the client preface", () => {
  test("a frame past 16,384 bytes is GOAWAY FRAME_SIZE_ERROR, with the reason as debug data", async () => {
    const c = await connect(fx.port);
    // An unknown frame type of the largest size is ignored (§4.1, §5.5).
    c.write(frame(0xfa, 0, 0, Buffer.alloc(16_384)));
    expect(await barrier(c)).toBe(true);
    expect(goaway(c)).toBeUndefined();
    c.write(frame(0xfa, 0, 0, Buffer.alloc(16_385)));
    expect(await eventually(() => c.closed, 5000)).toBe(true);
    const g = goaway(c);
    expect(g?.code).toBe(E.FRAME_SIZE_ERROR);
    expect(g?.last).toBe(0);
    expect(c.of(T.GOAWAY)[0]!.payload.byteLength).toBeGreaterThan(8);
    expect(g?.debug).toContain("16385");
  });

  test("a wrong preface, or a first frame that is not SETTINGS, is GOAWAY PROTOCOL_ERROR and the connection closes", async () => {
    const wrong = await rawExchange(fx.port, Buffer.concat([Buffer.from("PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n", "latin1"), settings()]));
    expect(wrong.closed).toBe(true);
    const g1 = wrong.frames.find((f) => f.type === T.GOAWAY);
    expect(g1?.payload.readUInt32BE(4)).toBe(E.PROTOCOL_ERROR);

    const noSettings = await rawExchange(fx.port, Buffer.concat([PREFACE, frame(T.PING, 0, 0, Buffer.alloc(8))]));
    expect(noSettings.closed).toBe(true);
    const g2 = noSettings.frames.find((f) => f.type === T.GOAWAY);
    expect(g2?.payload.readUInt32BE(4)).toBe(E.PROTOCOL_ERROR);
    expect(noSettings.frames.some((f) => f.type === T.PING)).toBe(false);
  });
});

describe("responses", () => {
  test("a response sent before the request ended is followed by RST_STREAM NO_ERROR after its END_STREAM (§8.1); the connection goes on", async () => {
    const c = await connect(fx.port);
    c.write(frame(T.HEADERS, F.END_HEADERS, 1, hb("/noread", [], "POST")));
    c.write(frame(T.DATA, 0, 1, Buffer.from("partial")));
    expect(await eventually(() => c.of(T.RST, 1).length > 0, 5000)).toBe(true);
    const mine = c.frames.filter((f) => f.stream === 1);
    const endAt = mine.findIndex((f) => (f.type === T.DATA || f.type === T.HEADERS) && (f.flags & F.END_STREAM) !== 0);
    const rstAt = mine.findIndex((f) => f.type === T.RST);
    expect(endAt).toBeGreaterThanOrEqual(0);
    expect(rstAt).toBe(mine.length - 1);
    expect(rstAt).toBeGreaterThan(endAt);
    expect(mine[rstAt]!.payload.readUInt32BE(0)).toBe(E.NO_ERROR);
    expect(responseOf(c, 1).body.toString()).toBe("answered without reading the body");
    // What the client had in flight on the stream is dropped, not an error.
    c.write(frame(T.DATA, F.END_STREAM, 1, Buffer.from("late")));
    c.headers(3, request(AUTHORITY, "/hello?name=next"));
    expect((await complete(c, 3)).body.toString()).toBe("hello next\n");
    expect(c.of(T.RST)).toHaveLength(1);
    expect(goaway(c)).toBeUndefined();
  });
});

describe("retiring and stopping the server", () => {
  let own: Served;
  beforeAll(() => {
    own = serve();
  });
  afterAll(() => {
    own.listener.closeAll();
  });

  test("stop(false): GOAWAY NO_ERROR with the last stream id; the stream in flight completes, a new one is not served, then the connection closes", async () => {
    const c = await connect(own.port);
    c.headers(1, request(AUTHORITY, "/hold", [["x-tag", "retire"]]));
    expect(await eventually(() => own.held.has("retire"), 5000)).toBe(true);
    own.h2.stop(false);
    expect(await eventually(() => goaway(c) !== undefined, 5000)).toBe(true);
    expect(goaway(c)).toMatchObject({ last: 1, code: E.NO_ERROR });

    c.headers(3, request(AUTHORITY, "/hello?name=late", [["x-tag", "after-goaway"]]));
    expect(await barrier(c)).toBe(true);
    expect(c.frames.filter((f) => f.stream === 3)).toHaveLength(0);
    expect(seenBy(own, "after-goaway")).toBeUndefined();
    expect(c.closed).toBe(false);

    const held = own.held.get("retire")!;
    held.respond({ ":status": 200 });
    held.write(Buffer.from("finished"));
    held.end();
    const res = await complete(c, 1);
    expect(res.status).toBe("200");
    expect(res.body.toString()).toBe("finished");
    expect(await eventually(() => c.closed, 5000)).toBe(true);
    expect(c.of(T.GOAWAY)).toHaveLength(1);
    expect(await eventually(() => own.h2.sessions === 0, 5000)).toBe(true);
  });

  test("stop(true): streams in flight are RST_STREAM CANCEL, and the connection closes", async () => {
    const c = await connect(own.port);
    c.headers(1, request(AUTHORITY, "/hold", [["x-tag", "stop-now"]]));
    expect(await eventually(() => own.held.has("stop-now"), 5000)).toBe(true);
    own.h2.stop(true);
    expect(await eventually(() => c.closed, 5000)).toBe(true);
    expect(c.outcome(1)).toBe(`rst:${E.CANCEL}`);
    expect(c.of(T.HEADERS, 1)).toHaveLength(0);
    expect(goaway(c)?.code).toBe(E.NO_ERROR);
    expect(own.h2.sessions).toBe(0);
  });
});
