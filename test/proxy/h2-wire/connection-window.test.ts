/**
 * The HTTP/2 connection's receive window (src/proxy/h2/wire/connection.ts) is opened
 * again as data arrives, and what a stream holds is bounded by its own window: so streams
 * whose readers are slow never stall the others of their connection. That matters for a
 * sidecar, whose sessions carry many callers' calls at once (sidecar to sidecar, and to
 * the local service): were the connection's window held by unread data, a caller that
 * reads nothing on 16 streams would stall every other caller's calls to the service.
 * Also that the windows stay alive through resets either way and DATA for streams gone.
 *
 * Topology, all on loopback:
 *   raw frames over mTLS (the certificate of "web")  →  payments sidecar (inbound)
 *     →  h2c  →  a raw HTTP/2 service (FakeService) that opens a request stream's window
 *        only when told, and sends responses as fast as the sidecar's windows allow.
 *
 * The sidecar is stopped by pid (fixtureFor), the service and every client by handle.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import net from "node:net";
import { HpackDecoder } from "../../../src/proxy/h2/wire/hpack.ts";
import { clientTls } from "../../helpers/data-plane.ts";
import { fixtureFor, serviceDoc } from "../../helpers/mesh-fixture.ts";
import { block, F, frame, frameReader, literal, RawH2, request, rstFrame, settings, T } from "../../helpers/raw-h2.ts";
import { eventually } from "../../helpers/wait.ts";

const CONNECTION_WINDOW = 1 << 20;
const DEFAULT_WINDOW = 65_535;
const MAX_FRAME = 16_384;
/** RFC 9113 setting ids and error codes used here. */
const INITIAL_WINDOW_SIZE = 4;
const MAX_CONCURRENT_STREAMS = 3;
const PROTOCOL_ERROR = 1;

const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
};
const windowUpdate = (stream: number, increment: number) => frame(T.WINDOW_UPDATE, 0, stream, u32(increment));

/** A body whose byte k is a function of (seed, k): a gap, a repeat or a swap between streams shows. */
function pattern(seed: number, n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let k = 0; k < n; k++) b[k] = (seed * 13 + k * 7 + (k >> 9)) & 0xff;
  return b;
}

// ---------------------------------------------------------------------------------------
// The service: raw HTTP/2 (h2c), so what the sidecar lets it send, and what it sends it,
// is known to the byte.
//  - Request streams (POST): the service's SETTINGS_INITIAL_WINDOW_SIZE is 0, so the
//    sidecar may send no body until the service opens the stream's window: at once for
//    paths starting "/open", on release() for the others ("stall" streams). At the
//    request's end it answers 200 with {"bytes", "sha"} of the body it got.
//  - /down…?n=N&seed=S: answers 200 with pattern(S, N), its first DATA frame 1 KiB, the
//    rest in 16 KiB frames, as fast as the sidecar's windows allow; `sent` counts them.
// ---------------------------------------------------------------------------------------
interface UpStream {
  id: number;
  path: string;
  conn: UpConn;
  chunks: Buffer[];
  bytes: number;
  ended: boolean;
  reset: boolean;
  /** Its request window was opened. */
  opened: boolean;
  /** /down: what is left to send. */
  body: Buffer | undefined;
  at: number;
  sendWindow: number;
}

interface UpConn {
  sock: net.Socket;
  /** What the sidecar lets this connection send: 65,535 and every stream-0 WINDOW_UPDATE. */
  sendWindow: number;
  /** The sum of the sidecar's stream-0 WINDOW_UPDATE increments. */
  credited: number;
  /** DATA bytes of /down bodies sent. */
  sent: number;
  streams: Map<number, UpStream>;
}

class FakeService {
  port = 0;
  streams: UpStream[] = [];
  conns: UpConn[] = [];
  /** Path prefixes whose stall streams were released. */
  private readonly released: string[] = [];
  private readonly server: net.Server;

  constructor() {
    this.server = net.createServer((sock) => this.accept(sock));
  }

  listen(): Promise<void> {
    return new Promise((resolve) => this.server.listen(0, "127.0.0.1", () => ((this.port = (this.server.address() as net.AddressInfo).port), resolve())));
  }

  stop(): void {
    this.server.close();
    for (const c of this.conns) c.sock.destroy();
  }

  of(prefix: string): UpStream[] {
    return this.streams.filter((s) => s.path.startsWith(prefix));
  }

  /** Opens the request window of every stall stream whose path starts with `prefix` (and of any opened from now on). */
  release(prefix: string): void {
    this.released.push(prefix);
    for (const s of this.streams) if (!s.opened && !s.reset && s.path.startsWith(prefix)) this.open(s);
  }

  private isReleased(path: string): boolean {
    return path.startsWith("/open") || this.released.some((p) => path.startsWith(p));
  }

  private open(s: UpStream): void {
    s.opened = true;
    s.conn.sock.write(windowUpdate(s.id, 1 << 24));
  }

  private accept(sock: net.Socket): void {
    const conn: UpConn = { sock, sendWindow: DEFAULT_WINDOW, credited: 0, sent: 0, streams: new Map() };
    this.conns.push(conn);
    sock.on("error", () => {});
    const decoder = new HpackDecoder();
    let headerParts: Buffer[] | undefined;
    let headerStream = 0;
    let headerEnd = false;
    // The request streams' windows start shut; the connection's is wide open.
    sock.write(Buffer.concat([settings([[INITIAL_WINDOW_SIZE, 0], [MAX_CONCURRENT_STREAMS, 1000]]), windowUpdate(0, 1 << 30)]));
    const read = frameReader(true, (type, flags, id, payload) => {
      switch (type) {
        case T.SETTINGS:
          if (!(flags & F.ACK)) sock.write(frame(T.SETTINGS, F.ACK, 0));
          return;
        case T.PING:
          if (!(flags & F.ACK)) sock.write(frame(T.PING, F.ACK, 0, payload));
          return;
        case T.HEADERS:
        case T.CONTINUATION: {
          if (type === T.HEADERS) {
            headerParts = [];
            headerStream = id;
            headerEnd = (flags & F.END_STREAM) !== 0;
          }
          headerParts?.push(Buffer.from(payload));
          if (!(flags & F.END_HEADERS) || headerParts === undefined) return;
          const fields = decoder.decode(Buffer.concat(headerParts));
          headerParts = undefined;
          const known = conn.streams.get(headerStream);
          if (known !== undefined) {
            // Trailers: the request's end.
            if (headerEnd) this.requestEnded(known);
            return;
          }
          const s: UpStream = { id: headerStream, path: fields[fields.indexOf(":path") + 1] ?? "", conn, chunks: [], bytes: 0, ended: false, reset: false, opened: false, body: undefined, at: 0, sendWindow: DEFAULT_WINDOW };
          conn.streams.set(s.id, s);
          this.streams.push(s);
          if (s.path.startsWith("/down")) return this.answerDown(s);
          if (this.isReleased(s.path)) this.open(s);
          if (headerEnd) this.requestEnded(s);
          return;
        }
        case T.DATA: {
          const s = conn.streams.get(id);
          if (s === undefined) return;
          s.chunks.push(Buffer.from(payload));
          s.bytes += payload.byteLength;
          // Read at once: the connection's window (opened 1 GiB) is topped up as it goes.
          if (payload.byteLength > 0) sock.write(windowUpdate(0, payload.byteLength));
          if (flags & F.END_STREAM) this.requestEnded(s);
          return;
        }
        case T.RST: {
          const s = conn.streams.get(id);
          if (s !== undefined) s.reset = true;
          return;
        }
        case T.WINDOW_UPDATE: {
          const increment = payload.readUInt32BE(0) & 0x7fff_ffff;
          if (id === 0) {
            conn.sendWindow += increment;
            conn.credited += increment;
          } else {
            const s = conn.streams.get(id);
            if (s !== undefined) s.sendWindow += increment;
          }
          return this.pump(conn);
        }
      }
    });
    sock.on("data", read);
  }

  private requestEnded(s: UpStream): void {
    if (s.ended) return;
    s.ended = true;
    const body = Buffer.concat(s.chunks);
    const answer = Buffer.from(JSON.stringify({ bytes: body.byteLength, sha: sha256(body) }));
    // Within the sidecar's windows: a few dozen bytes, the stream's first.
    s.conn.sendWindow -= answer.byteLength;
    s.conn.sock.write(Buffer.concat([frame(T.HEADERS, F.END_HEADERS, s.id, block([[":status", "200"], ["content-length", String(answer.byteLength)]])), frame(T.DATA, F.END_STREAM, s.id, answer)]));
  }

  private answerDown(s: UpStream): void {
    const q = new URL(s.path, "http://x").searchParams;
    const n = Number(q.get("n"));
    s.body = pattern(Number(q.get("seed")), n);
    s.conn.sock.write(frame(T.HEADERS, F.END_HEADERS, s.id, block([[":status", "200"], ["content-length", String(n)]])));
    this.pump(s.conn);
  }

  /** Sends what the sidecar's windows allow of every /down body, round robin. */
  private pump(conn: UpConn): void {
    const out: Buffer[] = [];
    for (let progress = true; progress; ) {
      progress = false;
      for (const s of conn.streams.values()) {
        const body = s.body;
        if (body === undefined || s.reset || s.at >= body.byteLength) continue;
        const n = Math.min(s.at === 0 ? 1024 : MAX_FRAME, body.byteLength - s.at, s.sendWindow, conn.sendWindow);
        if (n <= 0) continue;
        out.push(frame(T.DATA, s.at + n === body.byteLength ? F.END_STREAM : 0, s.id, body.subarray(s.at, s.at + n)));
        s.at += n;
        s.sendWindow -= n;
        conn.sendWindow -= n;
        conn.sent += n;
        progress = true;
      }
    }
    if (out.length > 0) conn.sock.write(Buffer.concat(out));
  }
}

// ---------------------------------------------------------------------------------------
// The client: raw frames, its send windows read from the WINDOW_UPDATEs that came back.
// ---------------------------------------------------------------------------------------
class Sender {
  /** The connection's send window, and the sum of the sidecar's stream-0 increments. */
  conn = DEFAULT_WINDOW;
  credited = 0;
  private readonly streams = new Map<number, number>();
  private seen = 0;

  constructor(readonly c: RawH2) {}

  private poll(): void {
    const frames = this.c.frames;
    for (; this.seen < frames.length; this.seen++) {
      const f = frames[this.seen]!;
      if (f.type !== T.WINDOW_UPDATE) continue;
      const increment = f.payload.readUInt32BE(0) & 0x7fff_ffff;
      if (f.stream === 0) {
        this.conn += increment;
        this.credited += increment;
      } else this.streams.set(f.stream, this.streamWindow(f.stream) + increment);
    }
  }

  private streamWindow(id: number): number {
    return this.streams.get(id) ?? DEFAULT_WINDOW;
  }

  /** What may be sent on stream `id` now (`connectionOnly`: its own window ignored, for a stream gone). */
  room(id: number, connectionOnly = false): number {
    this.poll();
    return connectionOnly ? this.conn : Math.min(this.conn, this.streamWindow(id));
  }

  /** Sends what the windows allow of body[at, at + max), in frames of at most 16 KiB, END_STREAM with the body's last byte when `end`; how many bytes went. */
  send(id: number, body: Buffer, at: number, max: number, opts: { end?: boolean; connectionOnly?: boolean } = {}): number {
    const room = this.room(id, opts.connectionOnly);
    const n = Math.max(0, Math.min(room, max, body.byteLength - at));
    const parts: Buffer[] = [];
    for (let off = 0; off < n; off += MAX_FRAME) {
      const len = Math.min(MAX_FRAME, n - off);
      const last = opts.end === true && at + off + len === body.byteLength;
      parts.push(frame(T.DATA, last ? F.END_STREAM : 0, id, body.subarray(at + off, at + off + len)));
    }
    if (parts.length > 0) this.c.write(Buffer.concat(parts));
    this.conn -= n;
    if (!opts.connectionOnly) this.streams.set(id, this.streamWindow(id) - n);
    return n;
  }
}

interface Upload {
  id: number;
  body: Buffer;
  at: number;
  /** Sent whole, END_STREAM with its last frame. */
  ends: boolean;
  connectionOnly?: boolean;
}

/**
 * Sends the uploads as the windows allow, round robin, until all are sent or nothing
 * could go for `stallMs` (or `limitMs` passed): whether they all went.
 */
async function pump(s: Sender, uploads: Upload[], stallMs: number, limitMs = 20_000): Promise<boolean> {
  const until = Date.now() + limitMs;
  let lastProgress = Date.now();
  while (Date.now() < until && !s.c.closed) {
    let progress = false;
    for (const u of uploads) {
      if (u.at >= u.body.byteLength) continue;
      const n = s.send(u.id, u.body, u.at, MAX_FRAME, { end: u.ends, connectionOnly: u.connectionOnly });
      u.at += n;
      if (n > 0) progress = true;
    }
    if (uploads.every((u) => u.at >= u.body.byteLength)) return true;
    if (progress) lastProgress = Date.now();
    else if (Date.now() - lastProgress > stallMs) return false;
    else await Bun.sleep(5);
  }
  return false;
}

let pings = 0;
/** A PING and its ACK: every frame sent before it has been read by the sidecar. */
async function barrier(c: RawH2): Promise<boolean> {
  const payload = u32(++pings);
  const p = Buffer.concat([payload, payload]);
  c.write(frame(T.PING, 0, 0, p));
  return eventually(() => c.frames.some((f) => f.type === T.PING && (f.flags & F.ACK) !== 0 && f.payload.equals(p)), 5000);
}

/** The response of `id`: its :status and body, once it ended (or undefined after `ms`). */
async function response(c: RawH2, id: number, ms = 10_000): Promise<{ status: string | undefined; body: Buffer; ending: string }> {
  await eventually(() => c.ending(id) !== "open", ms);
  return { status: c.status(id), body: Buffer.concat(c.of(T.DATA, id).map((f) => f.payload)), ending: c.ending(id) };
}

// ---------------------------------------------------------------------------------------
// The mesh
// ---------------------------------------------------------------------------------------
const fx = fixtureFor("payments", "web");
let svc: FakeService;
let payments: Awaited<ReturnType<typeof fx.proxy>>;
const clients: RawH2[] = [];

beforeAll(async () => {
  svc = new FakeService();
  await svc.listen();
  payments = await fx.proxy("payments", `http://127.0.0.1:${svc.port}`, fx.documents("payments-own", [serviceDoc("payments", svc.port, undefined)]));
});
afterAll(() => {
  for (const c of clients) c.close();
  svc?.stop();
});

async function inbound(initial: [number, number][] = []): Promise<RawH2> {
  const c = await RawH2.tls(payments.ports.inbound, clientTls(fx, "web"), initial);
  clients.push(c);
  return c;
}
const post = (path: string, extra: [string, string][] = []) => block(request("payments", path, extra, "POST"));
const tagged = (name: string) => `${name}-${Math.random().toString(36).slice(2, 10)}`;

/** A POST of `body` on stream `id` to a path the service reads at once: it arrives whole, and is answered 200. */
async function uploadWhole(s: Sender, id: number, path: string, body: Buffer): Promise<void> {
  s.c.write(frame(T.HEADERS, F.END_HEADERS, id, post(tagged(path), [["content-length", String(body.byteLength)]])));
  expect(await pump(s, [{ id, body, at: 0, ends: true }], 3000)).toBe(true);
  const r = await response(s.c, id);
  expect([r.status, r.ending]).toEqual(["200", "end-stream"]);
  expect(JSON.parse(r.body.toString())).toEqual({ bytes: body.byteLength, sha: sha256(body) });
}

describe("the server side: request bodies held for a service that does not read them", () => {
  test("40 streams of a client the service does not read hold only their own windows: a 2 MiB body on another stream of the same connection reaches the service meanwhile", async () => {
    const c = await inbound();
    const s = new Sender(c);
    const tag = tagged("/stall-held");
    const N = 40;
    const SIZE = 128 * 1024;
    const uploads: Upload[] = [];
    for (let i = 0; i < N; i++) {
      const id = 1 + 2 * i;
      const u: Upload = { id, body: pattern(i, SIZE), at: 0, ends: true };
      uploads.push(u);
      c.write(frame(T.HEADERS, F.END_HEADERS, id, post(`${tag}-${i}`, [["content-length", String(SIZE)]])));
      u.at += s.send(id, u.body, 0, 1024);
    }
    expect(await barrier(c)).toBe(true);
    expect(await eventually(() => svc.of(tag).length === N, 10_000)).toBe(true);
    // As much as the windows allow, until nothing more may go: each stream's window, no more.
    expect(await pump(s, uploads, 800)).toBe(false);
    const taken = uploads.reduce((n, u) => n + u.at, 0);
    expect(taken).toBeLessThanOrEqual(N * DEFAULT_WINDOW);
    expect(taken).toBeGreaterThan(N * (DEFAULT_WINDOW - MAX_FRAME));
    expect(svc.of(tag).reduce((n, r) => n + r.bytes, 0)).toBe(0);

    // Another call on the same connection, to a path the service reads, goes through whole meanwhile.
    const id = 1 + 2 * N;
    const body = pattern(77, 2 * 1024 * 1024);
    await uploadWhole(s, id, "/open-beside-stalled", body);
    expect(uploads.every((u) => c.ending(u.id) === "open")).toBe(true);

    // The service reads the stalled ones: the rest goes, and every body arrives whole.
    svc.release(tag);
    expect(await pump(s, uploads, 5000)).toBe(true);
    for (const [i, u] of uploads.entries()) {
      const r = await response(c, u.id);
      expect(r.status).toBe("200");
      expect(r.ending).toBe("end-stream");
      expect(JSON.parse(r.body.toString())).toEqual({ bytes: SIZE, sha: sha256(pattern(i, SIZE)) });
    }
    expect(c.of(T.GOAWAY)).toHaveLength(0);
  }, 30_000);

  test("streams reset while holding unread body (by the client, or by the sidecar for a body past its content-length) give it back to the connection", async () => {
    const c = await inbound();
    const s = new Sender(c);
    const tag = tagged("/stall-reset");
    // 40 × 64 KiB: two and a half times the connection's window.
    const CYCLES = 40;
    let filled = 0;
    for (let i = 0; i < CYCLES; i++) {
      const id = 1 + 2 * i;
      const bySidecar = i % 2 === 1;
      const length = DEFAULT_WINDOW - 1000;
      c.write(frame(T.HEADERS, F.END_HEADERS, id, post(`${tag}-${i}`, bySidecar ? [["content-length", String(length)]] : [])));
      // The stream's whole window, held: the service reads nothing.
      const u: Upload = { id, body: pattern(i, DEFAULT_WINDOW), at: 0, ends: false };
      u.at += s.send(id, u.body, 0, 1024);
      const full = await pump(s, [u], 1500, 5000);
      if (!full) break;
      filled++;
      // Reset by the client; or by the sidecar, the body having passed its content-length in that last window's worth.
      if (!bySidecar) c.write(rstFrame(id));
      else {
        expect(await eventually(() => c.outcome(id) === `rst:${PROTOCOL_ERROR}`, 5000)).toBe(true);
      }
    }
    expect(filled).toBe(CYCLES);
    expect(svc.of(tag).reduce((n, r) => n + r.bytes, 0)).toBe(0);
    // A new request still goes through the same connection: its window was not used up by the streams gone.
    const id = 1 + 2 * CYCLES;
    const body = pattern(99, 200 * 1024);
    await uploadWhole(s, id, "/open-after-resets", body);
    expect(c.of(T.GOAWAY)).toHaveLength(0);
  }, 30_000);

  test("DATA for streams already gone (reset by the client, or by the sidecar) is given back at once: 3 MiB of it do not stall the connection", async () => {
    const c = await inbound();
    const s = new Sender(c);
    const tag = tagged("/stall-gone");
    // Stream 1: reset by the client at once. Stream 3: reset by the sidecar (an upper-case field name is malformed).
    c.write(Buffer.concat([frame(T.HEADERS, F.END_HEADERS, 1, post(`${tag}-1`)), rstFrame(1)]));
    c.write(frame(T.HEADERS, F.END_HEADERS, 3, Buffer.concat([post(`${tag}-3`), literal("X-Upper", "1")])));
    expect(await eventually(() => c.outcome(3) === `rst:${PROTOCOL_ERROR}`, 5000)).toBe(true);
    expect(await barrier(c)).toBe(true);
    // What was in flight for them when they went: the connection's window alone limits it.
    const gone: Upload[] = [1, 3].map((id) => ({ id, body: pattern(id, 3 * CONNECTION_WINDOW / 2), at: 0, ends: false, connectionOnly: true }));
    expect(await pump(s, gone, 3000)).toBe(true);
    expect(s.credited).toBeGreaterThan(CONNECTION_WINDOW);
    // And the connection serves a request after it.
    const body = pattern(5, 100 * 1024);
    await uploadWhole(s, 5, "/open-after-gone", body);
    expect(c.of(T.GOAWAY)).toHaveLength(0);
  }, 30_000);
});

/**
 * `n` responses of `size` bytes to a caller whose windows are shut, on one service
 * connection, once the service may send no more (nothing sent for 800 ms): each stream's
 * window is filled, and no more.
 */
async function heldResponses(path: string, n: number, size: number): Promise<{ c: RawH2; tag: string; conn: UpConn }> {
  const c = await inbound([[INITIAL_WINDOW_SIZE, 0]]);
  const tag = tagged(path);
  for (let i = 0; i < n; i++) c.write(frame(T.HEADERS, F.END_HEADERS | F.END_STREAM, 1 + 2 * i, block(request("payments", `${tag}-${i}?n=${size}&seed=${i}`))));
  expect(await eventually(() => svc.of(tag).length === n, 10_000)).toBe(true);
  const conns = new Set(svc.of(tag).map((r) => r.conn));
  expect(conns.size).toBe(1);
  const sent = () => svc.of(tag).reduce((total, r) => total + r.at, 0);
  let last = -1;
  for (let i = 0; i < 100 && sent() !== last; i++) {
    last = sent();
    await Bun.sleep(800);
  }
  expect(sent()).toBeLessThanOrEqual(n * DEFAULT_WINDOW);
  expect(sent()).toBeGreaterThan(n * (DEFAULT_WINDOW - MAX_FRAME));
  expect(c.of(T.DATA).length).toBe(0);
  return { c, tag, conn: [...conns][0]! };
}

/** Another caller, reading, gets a 2 MiB response whole, over the service connection `conn`. */
async function bigResponseOver(conn: UpConn, path: string): Promise<void> {
  const reader = await inbound([[INITIAL_WINDOW_SIZE, 1 << 24]]);
  reader.write(windowUpdate(0, 1 << 30));
  const BIG = 2 * 1024 * 1024;
  reader.write(frame(T.HEADERS, F.END_HEADERS | F.END_STREAM, 1, block(request("payments", `${tagged(path)}?n=${BIG}&seed=7`))));
  const r = await response(reader, 1, 15_000);
  expect(r.ending).toBe("end-stream");
  expect(r.body.equals(pattern(7, BIG))).toBe(true);
  expect(svc.streams.at(-1)!.conn).toBe(conn);
}

describe("the client side: responses held for a caller that does not read them", () => {
  test("40 responses to a caller whose windows are shut hold only their streams' windows: another caller gets a 2 MiB response on the same service connection meanwhile", async () => {
    const N = 40;
    const SIZE = 256 * 1024;
    const { c, conn } = await heldResponses("/down-held", N, SIZE);
    await bigResponseOver(conn, "/down-beside-held");
    // The first caller reads: every response arrives whole.
    c.write(Buffer.concat([settings([[INITIAL_WINDOW_SIZE, 1 << 24]]), windowUpdate(0, 1 << 30)]));
    for (let i = 0; i < N; i++) {
      const r = await response(c, 1 + 2 * i, 20_000);
      expect(r.status).toBe("200");
      expect(r.ending).toBe("end-stream");
      expect(r.body.equals(pattern(i, SIZE))).toBe(true);
    }
  }, 30_000);

  test("responses held for a caller that then resets its streams: the service's connection goes on, a 2 MiB response on it still comes", async () => {
    const N = 20;
    const { c, tag, conn } = await heldResponses("/down-reset", N, 256 * 1024);
    c.write(Buffer.concat(Array.from({ length: N }, (_, i) => rstFrame(1 + 2 * i))));
    expect(await eventually(() => svc.of(tag).every((r) => r.reset), 5000)).toBe(true);
    await bigResponseOver(conn, "/down-after-reset");
  }, 30_000);
});
