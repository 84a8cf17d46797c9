/**
 * Attacker's review of the sidecar's own HTTP/2 CLIENT (h2/wire/client-session.ts,
 * client-stream.ts, connection.ts, fields.ts; h2/client-sessions.ts; used by
 * h2/stream-relay.ts, mirror.ts and h2/inbound-h2.ts): what a hostile or broken upstream
 * can make it do.
 *
 * Topology, all on loopback:
 *   raw frames (test/helpers/raw-h2.ts) or node:http2 → web sidecar's outbound (h2c) →
 *     web's HTTP/2 client → a HOSTILE server written frame by frame here, reached either as
 *     (a) a Service outside the mesh (mtls: false, protocol: http2), or
 *     (b) the local service behind the api (or api2) sidecar's inbound: web → mTLS → api →
 *         api's HTTP/2 client (h2c) → the hostile server.
 * A hostile server's answer to each stream is chosen by the first segment of its :path
 * (BEHAVIOURS), its connection-level conduct (SETTINGS, window updates, GOAWAY tricks) by
 * the instance. Every frame the sidecar sends it is recorded.
 *
 * Every test asserts what RFC 9113 (and Envoy / nghttp2 / Go's client) do; a test that
 * fails here fails because the sidecar does otherwise.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { writeFileSync } from "node:fs";
import http2, { type IncomingHttpHeaders } from "node:http2";
import net from "node:net";
import { fixtureFor } from "../helpers/mesh-fixture.ts";
import { rssMiB } from "../helpers/data-plane.ts";
import { block, F, frame, headerFrames, literalIndexed, RawH2, request, rstFrame, settings, T } from "../helpers/raw-h2.ts";
import { eventually } from "../helpers/wait.ts";
import { HpackDecoder } from "../../src/proxy/h2/wire/hpack.ts";
import { H2Sessions } from "../../src/proxy/h2/client-sessions.ts";
import type { UpstreamHandler } from "../../src/proxy/h2/wire/client-stream.ts";
import { relaysKeptAlive } from "../helpers/relays-kept-alive.ts";

const fx = fixtureFor("web", "web2", "api", "api2");
type Proxy = Awaited<ReturnType<typeof fx.proxy>>;

const sleep = (ms: number) => Bun.sleep(ms);
const S = { MAX_CONCURRENT_STREAMS: 3, INITIAL_WINDOW_SIZE: 4, MAX_FRAME_SIZE: 5, ENABLE_PUSH: 2 } as const;
const E = { NO_ERROR: 0, PROTOCOL_ERROR: 1, INTERNAL_ERROR: 2, FLOW_CONTROL_ERROR: 3, FRAME_SIZE_ERROR: 6, REFUSED_STREAM: 7, CANCEL: 8, COMPRESSION_ERROR: 9, ENHANCE_YOUR_CALM: 11 } as const;
const PUSH_PROMISE = 5;
const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
};
const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex").slice(0, 16);
const goawayFrame = (last: number, code: number) => frame(T.GOAWAY, 0, 0, Buffer.concat([u32(last), u32(code)]));
const windowFrame = (id: number, inc: number) => frame(T.WINDOW_UPDATE, 0, id, u32(inc));
const headFrames = (id: number, fields: [string, string][], end: boolean) => headerFrames(id, block(fields), end);
function dataFrames(id: number, body: Buffer | string, end: boolean): Buffer {
  const b = typeof body === "string" ? Buffer.from(body) : body;
  if (b.byteLength === 0) return frame(T.DATA, end ? F.END_STREAM : 0, id);
  const out: Buffer[] = [];
  for (let at = 0; at < b.byteLength; at += 16_384) {
    const last = at + 16_384 >= b.byteLength;
    out.push(frame(T.DATA, last && end ? F.END_STREAM : 0, id, b.subarray(at, at + 16_384)));
  }
  return Buffer.concat(out);
}

// =======================================================================================
// The hostile server
// =======================================================================================
interface Req {
  id: number;
  conn: Conn;
  fields: string[];
  path: string;
  method: string;
  authority: string;
  /** Request body bytes received, and the bytes (first 8 MiB). */
  body: number;
  chunks: Buffer[];
  ended: boolean;
  /** The sidecar's RST_STREAM code, once it reset the stream. */
  rst: number | undefined;
  /** This side ended or reset its response. */
  responded: boolean;
  /** What the sidecar may still send on it (our receive window as we count it). */
  recvWindow: number;
}

interface Conn {
  n: number;
  sock: net.Socket;
  reqs: Map<number, Req>;
  decoder: HpackDecoder;
  closed: boolean;
  /** We sent GOAWAY: HEADERS after it are recorded in afterGoaway and ignored. */
  goawayOut: boolean;
  afterGoaway: number[];
  /** The raw 32-bit stream field of every HEADERS frame received, in order. */
  rawIds: number[];
  /** GOAWAY error codes and RST_STREAMs the sidecar sent. */
  goawaysIn: number[];
  rstsIn: [number, number][];
  ourInitial: number;
  connRecv: number;
  /** One entry per SETTINGS we sent and the sidecar has not acknowledged: a window decrease to apply at its ACK. */
  pendingSettings: (number | undefined)[];
  violations: string[];
  maxDataFrame: number;
  holdGrants: boolean;
  heldGrants: Map<number, number>;
  /** Streams open at once at most (HEADERS received, neither side done). */
  maxActive: number;
  state: Record<string, unknown>;
}

type Ev = "head" | "data" | "end";
interface HostileOpts {
  /** Our SETTINGS, sent at once (or settingsDelayMs later); "never": none. */
  settings?: [number, number][] | "never";
  settingsDelayMs?: number;
  /** WINDOW_UPDATE for every DATA received (default true). */
  grants?: boolean;
  /** Per-instance conduct: true when it handled the event. */
  on?: (ev: Ev, r: Req, c: Conn) => boolean;
  onConn?: (c: Conn) => void;
}

interface Hostile {
  name: string;
  port: number;
  conns: Conn[];
  reqs(): Req[];
  of(path: string): Req[];
  listen(): Promise<void>;
  stop(): void;
}

const send = (c: Conn, b: Buffer) => {
  if (!c.closed && !c.sock.destroyed) c.sock.write(b);
};

function reply(c: Conn, r: Req, status: number, body: string | Buffer = "", fields: [string, string][] = []): void {
  const b = typeof body === "string" ? Buffer.from(body) : body;
  r.responded = true;
  const h = headFrames(r.id, [[":status", String(status)], ...fields], b.byteLength === 0);
  send(c, b.byteLength === 0 ? h : Buffer.concat([h, dataFrames(r.id, b, true)]));
}

const activeOf = (c: Conn) => [...c.reqs.values()].filter((r) => r.rst === undefined && !(r.responded && r.ended)).length;

function applyInitial(c: Conn, v: number): void {
  const delta = v - c.ourInitial;
  c.ourInitial = v;
  for (const r of c.reqs.values()) r.recvWindow += delta;
}

/** SETTINGS_INITIAL_WINDOW_SIZE changed mid-connection: an increase counts at once, a decrease at the sidecar's ACK (what it sent before was under the old one). */
function changeInitial(c: Conn, v: number): void {
  send(c, settings([[S.INITIAL_WINDOW_SIZE, v]]));
  if (v >= c.ourInitial) {
    applyInitial(c, v);
    c.pendingSettings.push(undefined);
  } else c.pendingSettings.push(v);
}

function grant(c: Conn, r: Req | undefined, id: number, n: number, streamToo: boolean): void {
  if (c.holdGrants) {
    c.heldGrants.set(id, (c.heldGrants.get(id) ?? 0) + n);
    return;
  }
  c.connRecv += n;
  if (streamToo && r !== undefined) {
    r.recvWindow += n;
    send(c, Buffer.concat([windowFrame(0, n), windowFrame(id, n)]));
  } else send(c, windowFrame(0, n));
}

function releaseGrants(c: Conn): void {
  c.holdGrants = false;
  for (const [id, n] of c.heldGrants) {
    const r = c.reqs.get(id);
    grant(c, r, id, n, r !== undefined && !r.ended);
  }
  c.heldGrants.clear();
}

function fieldOf(fields: readonly string[], name: string): string | undefined {
  for (let i = 0; i < fields.length; i += 2) if (fields[i] === name) return fields[i + 1];
  return undefined;
}

const servers: Hostile[] = [];

function hostile(name: string, opts: HostileOpts = {}): Hostile {
  const conns: Conn[] = [];
  const pairs = opts.settings === "never" ? [] : (opts.settings ?? []);
  const initialWindow = pairs.find(([k]) => k === S.INITIAL_WINDOW_SIZE)?.[1] ?? 65_535;
  const server = net.createServer((sock) => {
    const c: Conn = {
      n: conns.length + 1,
      sock,
      reqs: new Map(),
      decoder: new HpackDecoder(),
      closed: false,
      goawayOut: false,
      afterGoaway: [],
      rawIds: [],
      goawaysIn: [],
      rstsIn: [],
      ourInitial: initialWindow,
      connRecv: 65_535,
      pendingSettings: [],
      violations: [],
      maxDataFrame: 0,
      holdGrants: false,
      heldGrants: new Map(),
      maxActive: 0,
      state: {},
    };
    conns.push(c);
    sock.on("error", () => {});
    sock.on("close", () => (c.closed = true));
    const sendSettings = () => {
      c.pendingSettings.push(undefined);
      send(c, settings(pairs));
    };
    if (opts.settings !== "never") {
      if (opts.settingsDelayMs) setTimeout(sendSettings, opts.settingsDelayMs);
      else sendSettings();
    }
    opts.onConn?.(c);
    const dispatch = (ev: Ev, r: Req) => {
      if (opts.on?.(ev, r, c)) return;
      const fn = BEHAVIOURS[r.path.split("/")[1] ?? ""];
      if (fn) fn(ev, r, c);
      else if (ev === "end") reply(c, r, 200, `ok ${r.body}`);
    };
    let buf = Buffer.alloc(0);
    let preface = false;
    let pending: { id: number; end: boolean; parts: Buffer[] } | undefined;
    const onBlock = (id: number, fields: string[], end: boolean) => {
      const known = c.reqs.get(id);
      if (known !== undefined) {
        if (end) {
          known.ended = true;
          dispatch("end", known);
        }
        return;
      }
      if (c.goawayOut) return void c.afterGoaway.push(id);
      const r: Req = {
        id,
        conn: c,
        fields,
        path: fieldOf(fields, ":path") ?? "",
        method: fieldOf(fields, ":method") ?? "",
        authority: fieldOf(fields, ":authority") ?? "",
        body: 0,
        chunks: [],
        ended: false,
        rst: undefined,
        responded: false,
        recvWindow: c.ourInitial,
      };
      c.reqs.set(id, r);
      c.maxActive = Math.max(c.maxActive, activeOf(c));
      dispatch("head", r);
      if (end) {
        r.ended = true;
        dispatch("end", r);
      }
    };
    sock.on("data", (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (!preface) {
        if (buf.byteLength < 24) return;
        buf = buf.subarray(24);
        preface = true;
      }
      while (buf.byteLength >= 9) {
        const len = buf.readUIntBE(0, 3);
        if (buf.byteLength < 9 + len) break;
        const type = buf[3]!;
        const flags = buf[4]!;
        const raw = buf.readUInt32BE(5);
        const id = raw & 0x7fffffff;
        const payload = Buffer.from(buf.subarray(9, 9 + len));
        buf = buf.subarray(9 + len);
        switch (type) {
          case T.SETTINGS:
            if (flags & F.ACK) {
              const change = c.pendingSettings.shift();
              if (change !== undefined) applyInitial(c, change);
            } else send(c, frame(T.SETTINGS, F.ACK, 0));
            break;
          case T.PING:
            if (!(flags & F.ACK)) send(c, frame(T.PING, F.ACK, 0, payload));
            break;
          case T.GOAWAY:
            c.goawaysIn.push(payload.readUInt32BE(4));
            break;
          case T.RST: {
            const code = payload.readUInt32BE(0);
            c.rstsIn.push([id, code]);
            const r = c.reqs.get(id);
            if (r !== undefined) r.rst = code;
            break;
          }
          case T.HEADERS:
          case T.CONTINUATION:
            if (type === T.HEADERS) {
              c.rawIds.push(raw);
              pending = { id, end: (flags & F.END_STREAM) !== 0, parts: [] };
            }
            pending?.parts.push(payload);
            if (flags & F.END_HEADERS && pending !== undefined) {
              const b = pending;
              pending = undefined;
              onBlock(b.id, c.decoder.decode(Buffer.concat(b.parts)), b.end);
            }
            break;
          case T.DATA: {
            const r = c.reqs.get(id);
            const end = (flags & F.END_STREAM) !== 0;
            c.maxDataFrame = Math.max(c.maxDataFrame, len);
            c.connRecv -= len;
            if (c.connRecv < 0) c.violations.push(`connection window ${c.connRecv}`);
            if (r !== undefined) {
              r.recvWindow -= len;
              if (r.recvWindow < 0) c.violations.push(`stream ${id} window ${r.recvWindow}`);
              r.body += len;
              if (r.body <= 8 << 20) r.chunks.push(payload);
            }
            if (len > 0 && opts.grants !== false) grant(c, r, id, len, !end);
            if (r !== undefined && len > 0) dispatch("data", r);
            if (r !== undefined && end) {
              r.ended = true;
              dispatch("end", r);
            }
            break;
          }
        }
      }
    });
  });
  const h: Hostile = {
    name,
    port: 0,
    conns,
    reqs: () => conns.flatMap((c) => [...c.reqs.values()]),
    of: (path) => conns.flatMap((c) => [...c.reqs.values()].filter((r) => r.path === path)),
    listen: () => new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => ((h.port = (server.address() as net.AddressInfo).port), resolve()))),
    stop() {
      server.close();
      for (const c of conns) c.sock.destroy();
    },
  };
  servers.push(h);
  return h;
}

// ---------------------------------------------------------------------------------------
// What a stream gets, by the first segment of its :path
// ---------------------------------------------------------------------------------------
type Behaviour = (ev: Ev, r: Req, c: Conn) => void;
const onEnd =
  (fn: (r: Req, c: Conn) => void): Behaviour =>
  (ev, r, c) => {
    if (ev === "end") fn(r, c);
  };
const second = (r: Req) => r.path.split("/")[2] ?? "";
const shadow = (r: Req) => r.authority.endsWith("-shadow");

const holds: { path: string; release: () => void }[] = [];
function releaseHolds(prefix: string): void {
  for (let i = holds.length - 1; i >= 0; i--) {
    if (!holds[i]!.path.startsWith(prefix)) continue;
    holds[i]!.release();
    holds.splice(i, 1);
  }
}

const BAD_HEADS: Record<string, { fields: [string, string][]; end?: boolean }> = {
  "status-99": { fields: [[":status", "99"]] },
  "status-1000": { fields: [[":status", "1000"]] },
  "status-abc": { fields: [[":status", "abc"]] },
  "status-empty": { fields: [[":status", ""]] },
  "status-plus": { fields: [[":status", "+20"]] },
  "status-space": { fields: [[":status", "200 "]] },
  "no-status": { fields: [["content-type", "text/plain"]] },
  "status-after-field": { fields: [["x-a", "1"], [":status", "200"]] },
  "status-twice": { fields: [[":status", "200"], [":status", "204"]] },
  "pseudo-path": { fields: [[":status", "200"], [":path", "/x"]] },
  "pseudo-unknown": { fields: [[":status", "200"], [":smuggled", "1"]] },
  "upper-name": { fields: [[":status", "200"], ["X-Upper", "1"]] },
  connection: { fields: [[":status", "200"], ["connection", "close"]] },
  "keep-alive": { fields: [[":status", "200"], ["keep-alive", "timeout=5"]] },
  "proxy-connection": { fields: [[":status", "200"], ["proxy-connection", "close"]] },
  "transfer-encoding": { fields: [[":status", "200"], ["transfer-encoding", "chunked"]] },
  upgrade: { fields: [[":status", "200"], ["upgrade", "h2c"]] },
  "value-crlf": { fields: [[":status", "200"], ["x-a", "a\r\nx-injected: 1"]] },
  "value-lf": { fields: [[":status", "200"], ["x-a", "a\nx-injected: 1"]] },
  "value-nul": { fields: [[":status", "200"], ["x-a", "a\u0000b"]] },
  "value-lead-space": { fields: [[":status", "200"], ["x-a", " a"]] },
  "value-trail-tab": { fields: [[":status", "200"], ["x-a", "a\t"]] },
  "name-space": { fields: [[":status", "200"], ["x a", "1"]] },
  "name-colon": { fields: [[":status", "200"], ["x:y", "1"]] },
  "name-empty": { fields: [[":status", "200"], ["", "1"]] },
  "name-ctl": { fields: [[":status", "200"], ["x\u0001", "1"]] },
  "status-101": { fields: [[":status", "101"]] },
  "info-end-stream": { fields: [[":status", "103"]], end: true },
  "cl-word": { fields: [[":status", "200"], ["content-length", "ten"]] },
  "cl-two": { fields: [[":status", "200"], ["content-length", "8"], ["content-length", "9"]] },
  "cl-negative": { fields: [[":status", "200"], ["content-length", "-8"]] },
  "cl-end-stream": { fields: [[":status", "200"], ["content-length", "8"]], end: true },
};

/** The body sent after each malformed head: it must never reach the client. */
const BAD_BODY = "QQ-body-after-a-bad-head-QQ";

/** One 4,000-byte entry put in the dynamic table, then referenced 116,000 times (one octet each): ~465 MB decoded from 120 KB. */
const BOMB = Buffer.concat([literalIndexed("x-bomb", "a".repeat(4000)), Buffer.alloc(116_000, 0x80 | 62)]);

/** 103 Early Hints of ~1 KB each, sent while the socket takes them; why and when the flood stopped. */
interface Flood {
  started: number;
  stoppedAt: number;
  why: string;
  bytes: number;
  heads: number;
}
const floods = new Map<string, Flood>();

/** The PING flood: how much was written, and whether the sidecar cut the connection. */
interface PingFlood {
  started: number;
  bytes: number;
  cutAt: number;
}
const pingFloods = new Map<string, PingFlood>();

function ctl(kind: string, r: Req, c: Conn): void {
  const id = r.id;
  r.responded = true;
  const ok = () => Buffer.concat([headFrames(id, [[":status", "200"]], false), dataFrames(id, "ok", true)]);
  switch (kind) {
    case "push-promise":
      return send(c, frame(PUSH_PROMISE, F.END_HEADERS, id, Buffer.concat([u32(2), block([[":method", "GET"], [":scheme", "http"], [":path", "/pushed"], [":authority", "x"]])])));
    case "headers-even":
      return send(c, headFrames(2, [[":status", "200"]], true));
    case "rst-idle":
      return send(c, rstFrame(id + 200, E.CANCEL));
    case "data-idle":
      return send(c, dataFrames(id + 200, "x", true));
    case "window-idle":
      return send(c, windowFrame(id + 200, 100));
    case "interleaved":
      return send(c, Buffer.concat([frame(T.HEADERS, 0, id, block([[":status", "200"]])), frame(T.PING, 0, 0, Buffer.alloc(8))]));
    case "continuation-flood":
      return send(c, Buffer.concat([frame(T.HEADERS, 0, id, Buffer.from([0x88])), ...Array.from({ length: 100 }, (_, i) => frame(T.CONTINUATION, i === 99 ? F.END_HEADERS : 0, id, Buffer.from([0x88])))]));
    case "continuation-other-stream":
      return send(c, Buffer.concat([frame(T.HEADERS, 0, id, Buffer.from([0x88])), frame(T.CONTINUATION, F.END_HEADERS, id + 2, Buffer.from([0x88]))]));
    case "frame-too-big":
      return send(c, Buffer.concat([headFrames(id, [[":status", "200"]], false), frame(T.DATA, 0, id, Buffer.alloc(20_000, 0x61))]));
    case "conn-window-overflow":
      return send(c, Buffer.concat([windowFrame(0, 0x7fffffff), windowFrame(0, 0x7fffffff)]));
    case "stream-window-overflow":
      return send(c, Buffer.concat([windowFrame(id, 0x7fffffff), windowFrame(id, 0x7fffffff)]));
    case "settings-push-2":
      return send(c, settings([[S.ENABLE_PUSH, 2]]));
    case "settings-window-2^31":
      return send(c, settings([[S.INITIAL_WINDOW_SIZE, 0x80000000]]));
    case "settings-frame-100":
      return send(c, settings([[S.MAX_FRAME_SIZE, 100]]));
    case "hpack-garbage":
      return send(c, frame(T.HEADERS, F.END_HEADERS | F.END_STREAM, id, Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])));
    case "hpack-index-past-table":
      return send(c, frame(T.HEADERS, F.END_HEADERS | F.END_STREAM, id, Buffer.from([0x88, 0xff, 0x70])));
    case "data-before-headers":
      return send(c, dataFrames(id, "smuggled", false));
    case "unknown-frame":
      return send(c, Buffer.concat([frame(0xfa, 0xff, id, Buffer.from("xyz")), frame(0xfb, 0, 0, Buffer.from("zz")), ok()]));
    case "priority-frame":
      return send(c, Buffer.concat([frame(2, 0, id, Buffer.from([0, 0, 0, 0, 16])), ok()]));
    case "fin-mid-head":
      send(c, frame(T.HEADERS, 0, id, block([[":status", "200"]])));
      return void c.sock.end();
    case "fin-mid-body":
      send(c, Buffer.concat([headFrames(id, [[":status", "200"], ["content-type", "text/plain"]], false), dataFrames(id, "part", false)]));
      return void setTimeout(() => c.sock.end(), 30);
    case "tcp-reset-mid-body":
      send(c, Buffer.concat([headFrames(id, [[":status", "200"]], false), dataFrames(id, "part", false)]));
      return void setTimeout(() => (c.sock as unknown as { resetAndDestroy?: () => void }).resetAndDestroy?.() ?? c.sock.destroy(), 30);
    case "trailers-pseudo":
      return send(c, Buffer.concat([headFrames(id, [[":status", "200"]], false), dataFrames(id, "part", false), headFrames(id, [[":status", "200"]], true)]));
    case "trailers-no-end":
      return send(c, Buffer.concat([headFrames(id, [[":status", "200"]], false), dataFrames(id, "part", false), headFrames(id, [["x-t", "1"]], false)]));
    case "second-response":
      return send(c, Buffer.concat([ok(), headFrames(id, [[":status", "200"], ["x-second", "1"]], false), dataFrames(id, "smuggled", true)]));
    case "data-after-end":
      return send(c, Buffer.concat([ok(), dataFrames(id, "smuggled", true)]));
  }
}

const BEHAVIOURS: Record<string, Behaviour> = {
  ok: onEnd((r, c) => reply(c, r, 200, `ok ${r.body}`)),
  upload: onEnd((r, c) => reply(c, r, 200, `ok ${r.body} ${sha(Buffer.concat(r.chunks))}`)),
  "upload-shift": (ev, r, c) => {
    if (ev === "data" && r.body >= 20_000 && c.state.shifted === undefined) {
      // Mid-body: every stream's window shut (INITIAL_WINDOW_SIZE 0), and no WINDOW_UPDATE for 150 ms; then 70,000.
      c.state.shifted = true;
      changeInitial(c, 0);
      c.holdGrants = true;
      setTimeout(() => {
        changeInitial(c, 70_000);
        releaseGrants(c);
      }, 150);
    }
    if (ev === "end") reply(c, r, 200, `ok ${r.body} ${sha(Buffer.concat(r.chunks))}`);
  },
  hold: onEnd((r, c) => {
    send(c, headFrames(r.id, [[":status", "200"]], false));
    holds.push({ path: r.path, release: () => ((r.responded = true), send(c, dataFrames(r.id, "done", true))) });
  }),
  "bad-head": onEnd((r, c) => {
    const bad = BAD_HEADS[second(r)]!;
    r.responded = true;
    send(c, bad.end ? headFrames(r.id, bad.fields, true) : Buffer.concat([headFrames(r.id, bad.fields, false), dataFrames(r.id, BAD_BODY, true)]));
  }),
  "good-head": onEnd((r, c) =>
    reply(c, r, 200, "fine", [
      ["x-a", "v\tw"],
      ["set-cookie", "a=1"],
      ["set-cookie", "b=2"],
    ]),
  ),
  "big-head": onEnd((r, c) => reply(c, r, 200, "big", [["x-big", "b".repeat(Number(second(r)))]])),
  "bomb-head": onEnd((r, c) => {
    r.responded = true;
    send(c, Buffer.concat([headerFrames(r.id, BOMB, false), dataFrames(r.id, "smuggled", true)]));
  }),
  "bomb-trailers": onEnd((r, c) => {
    r.responded = true;
    send(c, Buffer.concat([headFrames(r.id, [[":status", "200"]], false), dataFrames(r.id, "body", false), headerFrames(r.id, BOMB, true)]));
  }),
  info: onEnd((r, c) => {
    r.responded = true;
    send(
      c,
      Buffer.concat([
        headFrames(r.id, [[":status", "100"]], false),
        ...[1, 2, 3].map((i) => headFrames(r.id, [[":status", "103"], ["link", `</s${i}.css>; rel=preload`]], false)),
        headFrames(r.id, [[":status", "200"]], false),
        dataFrames(r.id, "final", true),
      ]),
    );
  }),
  "info-flood": onEnd((r, c) => {
    const f: Flood = { started: performance.now(), stoppedAt: 0, why: "", bytes: 0, heads: 0 };
    floods.set(r.path, f);
    const one = headFrames(r.id, [[":status", "103"], ["link", `<${"/x".repeat(470)}>; rel=preload`]], false);
    const batch = Buffer.concat(Array.from({ length: 64 }, () => one));
    const stop = (why: string): void => {
      f.stoppedAt = performance.now();
      f.why = why;
    };
    const pump = (): void => {
      for (let i = 0; ; i++) {
        if (r.rst !== undefined) return stop(`the sidecar reset the stream (code ${r.rst})`);
        if (c.goawaysIn.length > 0) return stop(`the sidecar sent GOAWAY (code ${c.goawaysIn[0]})`);
        if (c.closed || c.sock.destroyed) return stop("the connection closed");
        if (performance.now() - f.started > 8000) return stop("8 s passed, the sidecar still reading");
        f.bytes += batch.byteLength;
        f.heads += 64;
        if (!c.sock.write(batch)) return void c.sock.once("drain", pump);
        if (i === 16) return void setImmediate(pump);
      }
    };
    pump();
  }),
  nobody: onEnd((r, c) => {
    r.responded = true;
    const id = r.id;
    switch (second(r)) {
      case "204":
        return send(c, Buffer.concat([headFrames(id, [[":status", "204"]], false), dataFrames(id, "smuggled-204", true)]));
      case "304":
        return send(c, Buffer.concat([headFrames(id, [[":status", "304"], ["etag", '"v1"']], false), dataFrames(id, "smuggled-304", true)]));
      case "head":
        return send(c, Buffer.concat([headFrames(id, [[":status", "200"], ["content-length", "12"]], false), dataFrames(id, "smuggled-hd!", true)]));
      case "head-no-length":
        return send(c, Buffer.concat([headFrames(id, [[":status", "200"]], false), dataFrames(id, "HTTP/1.1 200 OK\r\nsmuggled: 1\r\n\r\n", true)]));
      case "204-cl":
        return send(c, headFrames(id, [[":status", "204"], ["content-length", "5"]], true));
      case "head-cl":
        return send(c, headFrames(id, [[":status", "200"], ["content-length", "1000"]], true));
    }
  }),
  cl: onEnd((r, c) => {
    r.responded = true;
    const id = r.id;
    if (second(r) === "fewer-trailers") send(c, Buffer.concat([headFrames(id, [[":status", "200"], ["content-length", "10"]], false), dataFrames(id, "four", false), headFrames(id, [["x-t", "1"]], true)]));
    else send(c, Buffer.concat([headFrames(id, [[":status", "200"], ["content-length", "2"]], false), dataFrames(id, "0123456789", true)]));
  }),
  ctl: onEnd((r, c) => ctl(second(r), r, c)),
  trailers: onEnd((r, c) => {
    r.responded = true;
    send(
      c,
      Buffer.concat([
        headFrames(
          r.id,
          [
            [":status", "200"],
            ["content-type", "application/grpc"],
            ["x-mesh-client-id", "spiffe://evil.example/forged"],
            ["x-forwarded-client-cert", "By=spiffe://evil.example/forged"],
            ["l5d-client-id", "forged.evil"],
            ["x-mesh-tunnel", "1"],
            ["x-kept", "yes"],
          ],
          false,
        ),
        dataFrames(r.id, "body", false),
        headFrames(
          r.id,
          [
            ["grpc-status", "0"],
            ["x-mesh-client-id", "spiffe://evil.example/trailer"],
            ["l5d-client-id", "trailer.evil"],
            ["x-trailer", "kept"],
          ],
          true,
        ),
      ]),
    );
  }),
  // A complete response, then RST_STREAM NO_ERROR to stop the request body (RFC 9113 §8.1).
  "rst-no-error": (ev, r, c) => {
    if (ev !== "head") return;
    r.responded = true;
    send(c, Buffer.concat([headFrames(r.id, [[":status", "200"], ["content-type", "application/octet-stream"]], false), dataFrames(r.id, Buffer.alloc(30_000, 0x72), true), rstFrame(r.id, E.NO_ERROR)]));
  },
  // A complete response, then a graceful close: GOAWAY naming this stream, and FIN.
  "goaway-close": onEnd((r, c) => {
    r.responded = true;
    c.goawayOut = true;
    send(c, Buffer.concat([headFrames(r.id, [[":status", "200"]], false), dataFrames(r.id, Buffer.alloc(30_000, 0x67), true), goawayFrame(r.id, E.NO_ERROR)]));
    c.sock.end();
  }),
  "refuse-after-head": onEnd((r, c) => {
    r.responded = true;
    send(c, Buffer.concat([headFrames(r.id, [[":status", "200"]], false), dataFrames(r.id, "part", false), rstFrame(r.id, E.REFUSED_STREAM)]));
  }),
  "goaway0-after-head": onEnd((r, c) => {
    r.responded = true;
    c.goawayOut = true;
    send(c, Buffer.concat([headFrames(r.id, [[":status", "200"]], false), dataFrames(r.id, "part", false), goawayFrame(0, E.NO_ERROR)]));
  }),
  // The copy is answered with a head, and then nothing, ever; the call itself is answered.
  "mirror-stall": onEnd((r, c) => (shadow(r) ? send(c, headFrames(r.id, [[":status", "200"]], false)) : reply(c, r, 200, `ok ${r.body}`))),
  "mirror-rst": (ev, r, c) => {
    if (shadow(r) && ev === "head") return send(c, rstFrame(r.id, E.INTERNAL_ERROR));
    if (!shadow(r) && ev === "end") reply(c, r, 200, `ok ${r.body}`);
  },
  "ping-flood": onEnd((r, c) => {
    // The server stops reading, and sends PINGs, each owing it an ACK it never reads.
    const f: PingFlood = { started: performance.now(), bytes: 0, cutAt: 0 };
    pingFloods.set(r.path, f);
    c.sock.pause();
    c.sock.once("close", () => (f.cutAt = performance.now()));
    const batch = Buffer.concat(Array.from({ length: 10_000 }, (_, i) => frame(T.PING, 0, 0, Buffer.concat([u32(i), u32(i)]))));
    let batches = 0;
    const pump = (): void => {
      while (batches < 150) {
        if (c.closed || c.sock.destroyed) return;
        batches++;
        f.bytes += batch.byteLength;
        if (!c.sock.write(batch)) return void c.sock.once("drain", pump);
      }
    };
    pump();
  }),
};

// =======================================================================================
// The client side: raw frames to web's outbound, every frame back recorded
// =======================================================================================
interface Out {
  /** The final (non-1xx) head's :status, if any. */
  status: string | undefined;
  /** Every header list received on the stream, in order (heads and trailers). */
  lists: string[][];
  body: string;
  dataBytes: number;
  /** "end-stream", "rst:<code>", "closed" or "open" (no end within the limit). */
  ending: string;
  meshError: string | undefined;
  ms: number;
}

/** Every header list the client got on stream `id` (HEADERS + CONTINUATION assembled, decoded in order). */
function headLists(c: RawH2, id: number): string[][] {
  const dec = new HpackDecoder();
  const out: string[][] = [];
  let parts: Buffer[] | undefined;
  let sid = 0;
  for (const f of c.frames) {
    if (f.type === T.HEADERS) {
      parts = [f.payload];
      sid = f.stream;
    } else if (f.type === T.CONTINUATION && parts !== undefined) parts.push(f.payload);
    else continue;
    if (f.flags & F.END_HEADERS && parts !== undefined) {
      const fields = dec.decode(Buffer.concat(parts));
      if (sid === id) out.push(fields);
      parts = undefined;
    }
  }
  return out;
}

function outcomeOf(c: RawH2, id: number, started: number): Out {
  const lists = headLists(c, id);
  const final = lists.find((l) => l[0] === ":status" && !(l[1] ?? "").startsWith("1"));
  const data = c.of(T.DATA, id).map((f) => f.payload);
  return {
    status: final?.[1],
    lists,
    body: Buffer.concat(data).toString("latin1"),
    dataBytes: data.reduce((n, b) => n + b.byteLength, 0),
    ending: c.ending(id),
    meshError: final === undefined ? undefined : fieldOf(final, "x-mesh-error"),
    ms: performance.now() - started,
  };
}

const show = (o: Out) => `${o.status ?? "no head"} ${o.meshError ?? ""} ${o.ending} ${o.dataBytes}B ${JSON.stringify(o.body.slice(0, 50))} ${Math.round(o.ms)}ms`;
/** The proxy's own error (5xx with x-mesh-error) or a reset: the upstream's answer did not pass. */
const proxyError = (o: Out) => o.ending.startsWith("rst:") || (o.status !== undefined && /^5\d\d$/.test(o.status) && o.meshError !== undefined);

const BIG_WINDOW = 1 << 30;
async function openClient(port = web.ports.outbound, window = BIG_WINDOW): Promise<RawH2> {
  const c = await RawH2.plain(port, [[S.INITIAL_WINDOW_SIZE, window]]);
  if (window === BIG_WINDOW) c.write(windowFrame(0, BIG_WINDOW));
  clients.push(c);
  return c;
}

interface CallOpts {
  method?: string;
  body?: Buffer;
  /** No END_STREAM on the request. */
  open?: boolean;
  extra?: [string, string][];
  limitMs?: number;
  conn?: RawH2;
  id?: number;
  port?: number;
}

/** Sends a request on `conn` (or a new connection) without waiting. */
function sendRequest(c: RawH2, id: number, authority: string, path: string, o: CallOpts = {}): void {
  const method = o.method ?? (o.body !== undefined ? "POST" : "GET");
  c.write(headerFrames(id, block(request(authority, path, o.extra ?? [], method)), o.body === undefined && !o.open));
  if (o.body !== undefined) c.write(dataFrames(id, o.body, !o.open));
}

async function call(authority: string, path: string, o: CallOpts = {}): Promise<Out> {
  const c = o.conn ?? (await openClient(o.port));
  const id = o.id ?? 1;
  const started = performance.now();
  sendRequest(c, id, authority, path, o);
  await eventually(() => c.ending(id) !== "open", o.limitMs ?? 8000, 5);
  const out = outcomeOf(c, id, started);
  if (o.conn === undefined) c.close();
  return out;
}

// =======================================================================================
// The mesh
// =======================================================================================
let web: Proxy;
let web2: Proxy;
let api: Proxy;
let api2: Proxy;
let web2Config: string;
const clients: RawH2[] = [];
const h2sessions: http2.ClientHttp2Session[] = [];

/** Default conduct, behaviours by path. */
let main: Hostile;
/** The local service behind api's inbound: the same behaviours. */
let inb: Hostile;
let zero: Hostile;
let late: Hostile;
let one: Hostile;
let nowin: Hostile;
let fc: Hostile;
let fcbig: Hostile;
let ref1: Hostile;
let ref2: Hostile;
let gl: Hostile;
let ce: Hostile;
let ce2: Hostile;
let pinger: Hostile;
let rsrv: Hostile;

const doc = (kind: string, name: string, spec: string) => `apiVersion: mesh.dev/v1alpha1\nkind: ${kind}\nmetadata: { name: ${name} }\nspec:\n${spec}`;
const policyDoc = (name: string, policy: string) => doc("DestinationPolicy", name, `  loadBalancer: { type: round-robin }\n  outlierDetection: { consecutiveFailures: 1000 }\n${policy}`);
/** A Service outside the mesh, h2c with prior knowledge, and its policy. */
const outside = (name: string, servers: Hostile[], policy: string) => [
  doc("Service", name, `  mtls: false\n  ports: [{ name: http, port: 80, protocol: http2 }]\n  endpoints: [${servers.map((s) => `{ address: 127.0.0.1, port: ${s.port} }`).join(", ")}]\n`),
  policyDoc(name, policy),
];
const meshService = (name: string, port: number, policy: string) => [doc("Service", name, `  identity: ${name}\n  ports: [{ name: http, port: 80 }]\n  endpoints: [{ address: 127.0.0.1, port: ${port} }]\n`), policyDoc(name, policy)];
const NO_RETRY = (request: string, idle = "10s") => `  timeouts: { request: ${request}, idle: ${idle} }\n  retries: { attempts: 0 }\n`;
const RETRY = (request: string) => `  timeouts: { request: ${request}, idle: 10s }\n  retries: { attempts: 2, backoff: { base: 5ms, max: 20ms } }\n`;

/** Connection-level tricks on the first connection only: later ones are served plainly. */
const firstConnOnly = (trick: (ev: Ev, r: Req, c: Conn) => boolean) => (ev: Ev, r: Req, c: Conn) => (c.n === 1 ? trick(ev, r, c) : false);

/** The first connection: a connection error (DATA on a stream never opened) as soon as the first request's head is in. */
const connectionErrorTrick = firstConnOnly((ev, _r, c) => {
  if (ev === "head" && c.state.broke === undefined) {
    c.state.broke = true;
    send(c, dataFrames(99, "x", true));
  }
  return true;
});

beforeAll(async () => {
  main = hostile("main");
  inb = hostile("inb");
  zero = hostile("zero", { settings: [[S.MAX_CONCURRENT_STREAMS, 0]] });
  late = hostile("late", { settingsDelayMs: 600 });
  one = hostile("one", { settings: [[S.MAX_CONCURRENT_STREAMS, 1]] });
  nowin = hostile("nowin", { settings: [[S.INITIAL_WINDOW_SIZE, 0]], grants: false });
  fc = hostile("fc", { settings: [[S.INITIAL_WINDOW_SIZE, 1000], [S.MAX_FRAME_SIZE, 16_384]] });
  fcbig = hostile("fcbig", {
    settings: [[S.INITIAL_WINDOW_SIZE, 0x7fffffff], [S.MAX_FRAME_SIZE, 0xffffff]],
    onConn: (c) => {
      send(c, windowFrame(0, 0x7fffffff - 65_535));
      c.connRecv = 0x7fffffff;
    },
  });
  const refuse = (ev: Ev, r: Req, c: Conn) => {
    if (ev === "head") {
      r.responded = true;
      send(c, rstFrame(r.id, E.REFUSED_STREAM));
    }
    return true;
  };
  ref1 = hostile("ref1", { on: refuse });
  ref2 = hostile("ref2", { on: refuse });
  // Two streams at once; on its first connection, once two requests are in: GOAWAY naming the first, then an answer on each (the second is above the GOAWAY).
  gl = hostile("gl", {
    settings: [[S.MAX_CONCURRENT_STREAMS, 2]],
    on: firstConnOnly((ev, r, c) => {
      if (ev !== "end") return true;
      const got = (c.state.got ??= []) as Req[];
      got.push(r);
      if (got.length === 2) {
        const [a, b] = got as [Req, Req];
        c.goawayOut = true;
        send(c, goawayFrame(a.id, E.NO_ERROR));
        reply(c, a, 200, "first-conn");
        reply(c, b, 200, "late-above-goaway");
      }
      return true;
    }),
  });
  ce = hostile("ce", { settings: [[S.MAX_CONCURRENT_STREAMS, 1]], on: connectionErrorTrick });
  ce2 = hostile("ce2", { settings: [[S.MAX_CONCURRENT_STREAMS, 1]], on: connectionErrorTrick });
  pinger = hostile("pinger");
  rsrv = hostile("rsrv");
  await Promise.all(servers.map((s) => s.listen()));

  [api, api2] = await Promise.all([fx.proxy("api", `http://127.0.0.1:${inb.port}`), fx.proxy("api2", `http://127.0.0.1:${ce2.port}`)]);

  const mirrorRule = (prefix: string, mirror: string) => `    - matches: [{ path: { prefix: /${prefix}/ } }]\n      backends: [{ service: x-mir }]\n      mirror: { service: ${mirror} }\n`;
  const docs = [
    ...outside("x-main", [main], NO_RETRY("3s")),
    ...outside("x-retry", [main], RETRY("3s")),
    ...outside("x-zero", [zero], NO_RETRY("800ms", "1s")),
    ...outside("x-late", [late], NO_RETRY("200ms", "1s")),
    ...outside("x-one", [one], NO_RETRY("1500ms")),
    ...outside("x-nowin", [nowin], NO_RETRY("2s")),
    ...outside("x-fc", [fc], NO_RETRY("10s")),
    ...outside("x-fcbig", [fcbig], NO_RETRY("10s")),
    ...outside("x-refuse", [ref1, ref2], RETRY("3s")),
    ...outside("x-gl", [gl], RETRY("2500ms")),
    ...outside("x-ce", [ce], RETRY("2500ms")),
    ...outside("x-ping", [pinger], NO_RETRY("3s")),
    ...outside("x-mir", [main], NO_RETRY("3s")),
    ...outside("m-stall", [main], `  timeouts: { request: 300ms, idle: 10s }\n  retries: { attempts: 0 }\n  circuitBreaker: { maxRequests: 2 }\n`),
    ...outside("m-nowin", [nowin], NO_RETRY("300ms")),
    ...outside("m-zero", [zero], NO_RETRY("300ms")),
    ...outside("m-rst", [main], NO_RETRY("300ms")),
    doc("HTTPRoute", "x-mir", `  service: x-mir\n  rules:\n${mirrorRule("mirror-stall", "m-stall")}${mirrorRule("mirror-nowin", "m-nowin")}${mirrorRule("mirror-zero", "m-zero")}${mirrorRule("mirror-rst", "m-rst")}`),
    ...meshService("api", api.ports.inbound, NO_RETRY("3s")),
    ...meshService("api2", api2.ports.inbound, NO_RETRY("8s")),
  ];
  web = await fx.proxy("web", fx.echo("web").url, fx.documents("web-h2-client", docs), ["--stream-idle-timeout", "60s"]);
  web2Config = fx.documents("web2-h2-client", outside("r-svc", [rsrv], `  timeouts: { request: 5s, idle: 30s }\n  retries: { attempts: 0 }\n`));
  web2 = await fx.proxy("web2", fx.echo("web2").url, web2Config);
});

afterAll(() => {
  for (const c of clients) c.close();
  for (const s of h2sessions) s.destroy();
  for (const s of servers) s.stop();
});

const sides = [
  { side: "outside the mesh (web → h2c)", authority: "x-main" },
  { side: "local service (web → mTLS → api → h2c)", authority: "api" },
] as const;

// =======================================================================================
// 1. Response heads
// =======================================================================================
describe("response heads the upstream breaks", () => {
  for (const { side, authority } of sides) {
    test(`${side}: each of ${Object.keys(BAD_HEADS).length} malformed response heads (bad :status, other pseudo-headers, upper case, connection-specific fields, CR/LF/NUL, 101, a 1xx with END_STREAM, bad content-length) is never relayed: a 5xx with x-mesh-error or a reset; a valid unusual head passes`, async () => {
      const c = await openClient();
      const names = Object.keys(BAD_HEADS);
      const outs = await Promise.all(names.map((k, i) => call(authority, `/bad-head/${k}`, { conn: c, id: 1 + 2 * i })));
      const wrong: string[] = [];
      outs.forEach((o, i) => {
        if (!proxyError(o)) wrong.push(`${names[i]}: relayed: ${show(o)}`);
        if (o.body.includes(BAD_BODY)) wrong.push(`${names[i]}: the body after a malformed head reached the client`);
        if (o.lists.some((l) => l.includes("x-injected: 1") || l.some((x) => x.includes("x-injected")))) wrong.push(`${names[i]}: an injected field reached the client`);
      });
      const good = await call(authority, "/good-head/x", { conn: c, id: 1 + 2 * names.length });
      const head = good.lists[0] ?? [];
      if (good.status !== "200" || good.body !== "fine" || fieldOf(head, "x-a") !== "v\tw" || head.filter((x) => x === "set-cookie").length !== 2) wrong.push(`control (valid head): ${show(good)} ${JSON.stringify(head)}`);
      expect(wrong).toEqual([]);
    });

    test(`${side}: a response head of 70 KB (past the 64 KiB header list limit, in HEADERS + CONTINUATION) is refused; one of 60 KB is relayed whole`, async () => {
      const big = await call(authority, "/big-head/70000");
      const fits = await call(authority, "/big-head/60000");
      expect({ big: proxyError(big), bigBody: big.body.includes("big") && big.status === "200" }).toEqual({ big: true, bigBody: false });
      expect({ status: fits.status, body: fits.body, header: fieldOf(fits.lists[0] ?? [], "x-big")?.length }).toEqual({ status: "200", body: "big", header: 60_000 });
    });

    test(`${side}: 10 HPACK bombs in response heads and 10 in trailers (a 4,000-byte entry referenced 116,000 times, ~465 MB decoded each) are refused within 2 s each; the sidecars' memory stays bounded`, async () => {
      const pids = [web.proc.pid, api.proc.pid];
      const before = pids.map(rssMiB);
      const wrong: string[] = [];
      for (let i = 0; i < 10; i++) {
        const h = await call(authority, `/bomb-head/${i}`);
        if (!proxyError(h) || h.ms > 2000 || h.body.includes("smuggled")) wrong.push(`head bomb ${i}: ${show(h)}`);
        const t = await call(authority, `/bomb-trailers/${i}`);
        // The body may have begun; the response must never end as complete (its trailers were not taken).
        if (t.ending === "end-stream" && t.status === "200") wrong.push(`trailer bomb ${i} ended as complete: ${show(t)}`);
        if (t.ending === "open" || t.ms > 2000) wrong.push(`trailer bomb ${i}: ${show(t)}`);
      }
      const growth = pids.map((p, i) => Math.round(rssMiB(p) - before[i]!));
      expect(wrong).toEqual([]);
      expect(growth.every((g) => g < 100)).toBe(true);
      const after = await call(authority, "/ok/after-bombs");
      expect(after.status).toBe("200");
    });

    test(`${side}: 100 Continue and three 103 Early Hints before the final 200: the client gets the final response, whole, once`, async () => {
      const o = await call(authority, "/info/x");
      expect({ status: o.status, body: o.body, ending: o.ending, finals: o.lists.filter((l) => l[0] === ":status" && l[1] === "200").length }).toEqual({ status: "200", body: "final", ending: "end-stream", finals: 1 });
    });

    test(`${side}: a 204 or 304 with DATA, and a HEAD answered with DATA, never pass a body to the client (RFC 9110 §6.4.1; nghttp2 resets such a stream); a 204 with content-length and a HEAD with content-length and no DATA pass as they are`, async () => {
      const c = await openClient();
      const cases = [
        { name: "204 + DATA", path: "/nobody/204", method: "GET" },
        { name: "304 + DATA", path: "/nobody/304", method: "GET" },
        { name: "HEAD, content-length 12 + 12 bytes of DATA", path: "/nobody/head", method: "HEAD" },
        { name: "HEAD, no length + DATA that reads as an HTTP/1.1 response", path: "/nobody/head-no-length", method: "HEAD" },
      ];
      const outs = await Promise.all(cases.map((k, i) => call(authority, k.path, { conn: c, id: 1 + 2 * i, method: k.method })));
      const smuggled = outs.flatMap((o, i) => (o.dataBytes > 0 ? [`${cases[i]!.name}: the client got ${o.dataBytes} body bytes ${JSON.stringify(o.body.slice(0, 40))} (${show(o)})`] : []));
      const valid = await Promise.all([call(authority, "/nobody/204-cl", { conn: c, id: 101 }), call(authority, "/nobody/head-cl", { conn: c, id: 103, method: "HEAD" })]);
      expect(valid.map((o) => `${o.status} ${o.dataBytes} ${o.ending}`)).toEqual(["204 0 end-stream", "200 0 end-stream"]);
      expect(smuggled).toEqual([]);
    });

    test(`${side}: a body shorter than its content-length and ended by trailers, or longer: reset, never ended as complete`, async () => {
      const fewer = await call(authority, "/cl/fewer-trailers");
      const more = await call(authority, "/cl/more");
      expect([fewer, more].map((o) => (o.ending === "end-stream" && o.status === "200" ? `complete: ${show(o)}` : "not complete"))).toEqual(["not complete", "not complete"]);
      expect(more.dataBytes).toBeLessThanOrEqual(2);
    });

    test(`${side}: identity fields in the upstream's head and trailers (x-mesh-client-id, x-forwarded-client-cert, l5d-client-id, x-mesh-tunnel) never reach the client; trailers reach only a client that sent te: trailers`, async () => {
      const withTe = await call(authority, "/trailers/te", { extra: [["te", "trailers"]] });
      const without = await call(authority, "/trailers/plain");
      const forged = (l: string[]) => ["x-mesh-client-id", "x-forwarded-client-cert", "l5d-client-id", "x-mesh-tunnel"].filter((n) => l.includes(n));
      expect({ status: withTe.status, body: withTe.body, ending: withTe.ending, kept: fieldOf(withTe.lists[0] ?? [], "x-kept"), forged: withTe.lists.flatMap(forged), trailer: fieldOf(withTe.lists[1] ?? [], "x-trailer"), grpc: fieldOf(withTe.lists[1] ?? [], "grpc-status") }).toEqual({
        status: "200",
        body: "body",
        ending: "end-stream",
        kept: "yes",
        forged: [],
        trailer: "kept",
        grpc: "0",
      });
      expect({ lists: without.lists.length, forged: without.lists.flatMap(forged), body: without.body, ending: without.ending }).toEqual({ lists: 1, forged: [], body: "body", ending: "end-stream" });
    });
  }

  test("outside the mesh: a flood of 103 Early Hints (1 KB each, as fast as the socket takes them) is cut off by the sidecar within 1.5 s, not read until the 3 s request timeout (Go's client: at most 5 informational heads, or their bytes held to the header limit)", async () => {
    const o = await call("x-main", "/info-flood/a", { limitMs: 10_000 });
    await eventually(() => (floods.get("/info-flood/a")?.stoppedAt ?? 0) > 0, 10_000);
    const f = floods.get("/info-flood/a")!;
    const ranMs = Math.round(f.stoppedAt - f.started);
    expect({ cutOffWithin1500ms: ranMs < 1500, how: f.why, ranMs, informationalHeadsSent: f.heads, mbSent: Math.round(f.bytes / 1e5) / 10, client: show(o) }).toMatchObject({ cutOffWithin1500ms: true });
  }, 20_000);
});

// =======================================================================================
// 2. Frames the upstream may not send
// =======================================================================================
describe("frames and control frames from the upstream", () => {
  /** [case, what the upstream's connection must get: a GOAWAY code, an RST_STREAM code, or "served"/"cut"]. */
  const CASES: [string, string][] = [
    ["push-promise", "goaway:1"],
    ["headers-even", "goaway:1"],
    ["rst-idle", "goaway:1"],
    ["data-idle", "goaway:1"],
    ["window-idle", "goaway:1"],
    ["interleaved", "goaway:1"],
    ["continuation-flood", "goaway:11"],
    ["continuation-other-stream", "goaway:1"],
    ["frame-too-big", "goaway:6"],
    ["conn-window-overflow", "goaway:3"],
    ["settings-push-2", "goaway:1"],
    ["settings-window-2^31", "goaway:3"],
    ["settings-frame-100", "goaway:1"],
    ["hpack-garbage", "goaway:9"],
    ["hpack-index-past-table", "goaway:9"],
    ["stream-window-overflow", "rst:3"],
    ["data-before-headers", "rst:1"],
    ["trailers-pseudo", "rst:1"],
    ["trailers-no-end", "rst:1"],
    ["fin-mid-head", "cut"],
    ["fin-mid-body", "cut"],
    ["tcp-reset-mid-body", "cut"],
  ];

  test(`each of ${CASES.length} protocol violations (PUSH_PROMISE with push disabled, frames on idle or even streams, interleaved header blocks, CONTINUATION floods, oversized frames, window overflows, bad SETTINGS, broken HPACK, DATA before HEADERS, bad trailers, a connection cut mid-head or mid-body) costs the upstream the connection (GOAWAY with the right code) or the stream (RST_STREAM), and the client a prompt 5xx or reset, never the upstream's answer as complete`, async () => {
    const wrong: string[] = [];
    for (const [kind, expected] of CASES) {
      const path = `/ctl/${kind}`;
      const o = await call("x-main", path, { limitMs: 5000 });
      const r = main.of(path)[0];
      if (r === undefined) {
        wrong.push(`${kind}: never reached the upstream`);
        continue;
      }
      await eventually(() => (expected.startsWith("goaway") ? r.conn.goawaysIn.length > 0 : expected.startsWith("rst") ? r.rst !== undefined : true), 1000);
      const got = expected.startsWith("goaway") ? `goaway:${r.conn.goawaysIn[0]}` : expected.startsWith("rst") ? `rst:${r.rst}` : "cut";
      if (got !== expected) wrong.push(`${kind}: the upstream got ${got}, not ${expected}`);
      if (!proxyError(o) || o.ms > 2000) wrong.push(`${kind}: the client got ${show(o)}`);
      if (o.ending === "end-stream" && o.status === "200") wrong.push(`${kind}: relayed as complete`);
    }
    expect(wrong).toEqual([]);
  });

  test("unknown frame types and PRIORITY frames are ignored (RFC 9113 §4.1, §5.3.2); a second response or DATA after END_STREAM never reaches the client", async () => {
    const outs = await Promise.all(["unknown-frame", "priority-frame", "second-response", "data-after-end"].map((k) => call("x-main", `/ctl/${k}`)));
    expect(outs.map((o) => `${o.status} ${o.body} ${o.ending} ${o.lists.length}`)).toEqual(Array(4).fill("200 ok end-stream 1"));
  });

  test("RST_STREAM REFUSED_STREAM on every stream (two endpoints, 2 retries): 30 POSTs each end with a 5xx and x-mesh-error within 2 s; the upstreams see at most 3 tries per call", async () => {
    const c = await openClient();
    const outs = await Promise.all(Array.from({ length: 30 }, (_, i) => call("x-refuse", `/ok/refused-${i}`, { conn: c, id: 1 + 2 * i, body: Buffer.from("pay") })));
    const bad = outs.filter((o) => !(proxyError(o) && o.status !== undefined) || o.ms > 2000).map(show);
    const tries = ref1.reqs().length + ref2.reqs().length;
    expect({ bad, triesAtMost90: tries <= 90, triesAtLeast30: tries >= 30 }).toEqual({ bad: [], triesAtMost90: true, triesAtLeast30: true });
  });

  test("REFUSED_STREAM, or GOAWAY naming no stream, after the response head (the stream was processed): the client's stream is reset, never ended, and the request is never sent again", async () => {
    const a = await call("x-retry", "/refuse-after-head/a");
    const b = await call("x-retry", "/goaway0-after-head/b");
    await sleep(300);
    expect([a, b].map((o) => `${o.status} ${o.ending.startsWith("rst:") ? "reset" : o.ending}`)).toEqual(["200 reset", "200 reset"]);
    expect([main.of("/refuse-after-head/a").length, main.of("/goaway0-after-head/b").length]).toEqual([1, 1]);
  });

  test("GOAWAY naming a stream lower than those in flight, with streams queued past the peer's limit of 2: the streams it did not take are retried (answered once each, by a later connection), nothing it answers above its GOAWAY reaches a client, and no new stream is opened on the connection after its GOAWAY (RFC 9113 §6.8)", async () => {
    const c = await openClient();
    const outs = await Promise.all(Array.from({ length: 4 }, (_, i) => call("x-gl", `/ok/gl-${i}`, { conn: c, id: 1 + 2 * i, limitMs: 6000 })));
    const first = gl.conns[0]!;
    const bodies = outs.map((o) => o.body).sort();
    expect({
      answers: outs.map((o) => `${o.status}${o.ms < 2000 ? "" : ` after ${Math.round(o.ms)} ms ${o.meshError}`}`),
      bodies,
      streamsOpenedAfterItsGoaway: first.afterGoaway,
    }).toEqual({ answers: ["200", "200", "200", "200"], bodies: ["first-conn", "ok 0", "ok 0", "ok 0"], streamsOpenedAfterItsGoaway: [] });
  }, 20_000);

  test("a connection error (the upstream sends DATA on a stream never opened) while streams wait past its limit of 1: every call is retried or failed at once; none is left on the dead connection until the request timeout (2.5 s)", async () => {
    const c = await openClient();
    const outs = await Promise.all(Array.from({ length: 3 }, (_, i) => call("x-ce", `/ok/ce-${i}`, { conn: c, id: 1 + 2 * i, limitMs: 6000 })));
    await eventually(() => ce.conns[0]!.goawaysIn.length > 0, 1000);
    expect({ goaway: ce.conns[0]!.goawaysIn[0], answers: outs.map((o) => (o.ms < 1500 ? `${o.status}` : `${o.status} ${o.meshError} after ${Math.round(o.ms)} ms`)) }).toEqual({ goaway: E.PROTOCOL_ERROR, answers: ["200", "200", "200"] });
  }, 20_000);

  test("the same against the local service behind api2's inbound (which has no request timeout of its own): every call is answered by api2 within 3 s, none left hanging until the caller's 8 s timeout", async () => {
    const c = await openClient();
    const outs = await Promise.all(Array.from({ length: 3 }, (_, i) => call("api2", `/ok/ce2-${i}`, { conn: c, id: 1 + 2 * i, limitMs: 12_000 })));
    expect(outs.map((o) => (o.ms < 3000 && o.ending !== "open" ? "answered" : `${show(o)}`))).toEqual(["answered", "answered", "answered"]);
  }, 30_000);

  for (const [what, path, body] of [
    ["followed by RST_STREAM NO_ERROR to stop the request body, to a client that reads slowly: the client gets the whole response, ended (RFC 9113 §8.1: clients MUST NOT discard responses as a result of such a RST_STREAM)", "/rst-no-error/a", Buffer.from("part of a longer body")],
    ["then GOAWAY naming the stream and FIN (a graceful close), to a client that reads slowly: the client gets the whole response, ended", "/goaway-close/a", undefined],
  ] as const) {
    test(`a complete response (30,000 bytes and END_STREAM) ${what}`, async () => {
      const c = await openClient(web.ports.outbound, 1000);
      const started = performance.now();
      sendRequest(c, 1, "x-main", path, body === undefined ? undefined : { body, open: true });
      await sleep(400);
      c.write(Buffer.concat([windowFrame(0, 1 << 20), windowFrame(1, 1 << 20)]));
      await eventually(() => c.ending(1) !== "open", 5000);
      const o = outcomeOf(c, 1, started);
      c.close();
      expect({ status: o.status, bytes: o.dataBytes, ending: o.ending }).toEqual({ status: "200", bytes: 30_000, ending: "end-stream" });
    });
  }

  test("a PING flood from an upstream that reads nothing (1.5M PINGs, 25 MB): the sidecar's memory stays bounded, the call ends, and other calls are served", async () => {
    const before = rssMiB(web.proc.pid);
    const o = await call("x-ping", "/ping-flood/a", { limitMs: 15_000 });
    const f = pingFloods.get("/ping-flood/a");
    await eventually(() => f !== undefined && (f.cutAt > 0 || f.bytes >= 150 * 170_000), 10_000);
    const growth = rssMiB(web.proc.pid) - before;
    const other = await call("x-main", "/ok/after-pings");
    expect({ callEnded: o.ending !== "open", growthUnder64MiB: growth < 64, other: other.status }).toEqual({ callEnded: true, growthUnder64MiB: true, other: "200" });
  }, 30_000);
});

// =======================================================================================
// 3. Flow control and stream limits from the upstream side
// =======================================================================================
function h2post(authority: string, path: string, body: Buffer, limitMs = 15_000): Promise<{ status: number; body: string; meshError: string | undefined; error: string | undefined; ms: number }> {
  const s = http2.connect(`http://127.0.0.1:${web.ports.outbound}`);
  s.on("error", () => {});
  h2sessions.push(s);
  const started = performance.now();
  return new Promise((resolve) => {
    const req = s.request({ ":method": "POST", ":path": path, ":authority": authority });
    const out = { status: 0, body: "", meshError: undefined as string | undefined, error: undefined as string | undefined, ms: 0 };
    const limit = setTimeout(() => ((out.error = "client gave up"), req.destroy()), limitMs);
    req.on("response", (h: IncomingHttpHeaders) => ((out.status = Number(h[":status"])), (out.meshError = h["x-mesh-error"] as string | undefined)));
    req.on("data", (d: Buffer) => (out.body += d));
    req.on("error", (e) => (out.error ??= e.message));
    req.on("close", () => {
      clearTimeout(limit);
      out.ms = performance.now() - started;
      s.close();
      resolve(out);
    });
    req.end(body);
  });
}
const pattern = (n: number, seed: number) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 7 + seed) % 251));

describe("flow control and stream limits set by the upstream", () => {
  test("windows of 1,000 bytes opened only as DATA arrives, SETTINGS_INITIAL_WINDOW_SIZE dropped to 0 mid-body and raised to 70,000 150 ms later, and SETTINGS_MAX_FRAME_SIZE 2^24-1 with 2^31-1 windows: every body arrives whole and in order, never past a window, never in a frame past the upstream's size", async () => {
    const bodies = [pattern(200_000, 1), pattern(200_000, 2), pattern(3 << 20, 3)];
    const [a, b, big] = await Promise.all([h2post("x-fc", "/upload/a", bodies[0]!), h2post("x-fc", "/upload-shift/b", bodies[1]!), h2post("x-fcbig", "/upload/c", bodies[2]!)]);
    expect([a, b, big].map((r) => `${r.status} ${r.body}`)).toEqual(bodies.map((x) => `200 ok ${x.byteLength} ${sha(x)}`));
    expect({ violations: [...fc.conns, ...fcbig.conns].flatMap((c) => c.violations), largestFrameToFc: Math.max(...fc.conns.map((c) => c.maxDataFrame)) <= 16_384 }).toEqual({ violations: [], largestFrameToFc: true });
  }, 30_000);

  test("an upstream that never opens its window (SETTINGS_INITIAL_WINDOW_SIZE 0): 8 POSTs of 16 MiB each end with 504 x-mesh-error timeout within the 2 s request timeout (+1 s); no body byte is sent to it; the sidecar holds at most a few windows' worth (RSS growth < 64 MiB)", async () => {
    const before = rssMiB(web.proc.pid);
    const outs = await Promise.all(Array.from({ length: 8 }, (_, i) => h2post("x-nowin", `/ok/nowin-${i}`, Buffer.alloc(16 << 20, i))));
    const growth = rssMiB(web.proc.pid) - before;
    expect(outs.map((o) => `${o.status} ${o.meshError} ${o.ms < 3000}`)).toEqual(Array(8).fill("504 timeout true"));
    expect({ bodyBytesAtUpstream: nowin.reqs().reduce((n, r) => n + r.body, 0), growthUnder64MiB: growth < 64 }).toEqual({ bodyBytesAtUpstream: 0, growthUnder64MiB: true });
  }, 30_000);

  test("SETTINGS_MAX_CONCURRENT_STREAMS 0: 40 calls in 4 waves each end 504 (x-mesh-error timeout) within the 800 ms request timeout (+700 ms); no HEADERS ever reaches the upstream; at most 32 connections; and every connection, which never carried a stream, is closed after the 1 s idle timeout", async () => {
    const from = zero.conns.length;
    const c = await openClient();
    const outs: Out[] = [];
    for (let w = 0; w < 4; w++) {
      outs.push(...(await Promise.all(Array.from({ length: 10 }, (_, i) => call("x-zero", `/ok/zero-${w}-${i}`, { conn: c, id: 1 + 2 * (w * 10 + i) })))));
      await sleep(150);
    }
    const conns = zero.conns.slice(from);
    expect(outs.filter((o) => !(o.status === "504" && o.meshError === "timeout" && o.ms < 1500)).map(show)).toEqual([]);
    expect({ headers: conns.reduce((n, x) => n + x.rawIds.length, 0), atMost32: conns.length <= 32 }).toEqual({ headers: 0, atMost32: true });
    await eventually(() => conns.every((x) => x.closed), 4000);
    expect({ connections: conns.length, stillOpen4sAfter: conns.filter((x) => !x.closed).length }).toEqual({ connections: conns.length, stillOpen4sAfter: 0 });
  }, 20_000);

  test("a call given up (200 ms request timeout) while its session waits for SETTINGS that come 600 ms late: no HEADERS reaches the peer, and the session, which never carried a stream, closes after the 1 s idle timeout", async () => {
    const from = late.conns.length;
    const o = await call("x-late", "/ok/late-a");
    expect(`${o.status} ${o.meshError}`).toBe("504 timeout");
    const conns = late.conns.slice(from);
    await eventually(() => conns.every((x) => x.closed), 4000);
    expect({ connections: conns.length, headers: conns.reduce((n, x) => n + x.rawIds.length, 0), stillOpen: conns.filter((x) => !x.closed).length }).toEqual({ connections: 1, headers: 0, stillOpen: 0 });
  }, 15_000);

  test("SETTINGS_MAX_CONCURRENT_STREAMS 1 and 32 held streams: 32 connections at most, never 2 streams on one; a 33rd call queued is cancelled by its client and a 34th times out (504) while queued; neither ever reaches the upstream, and the 32 held calls then complete", async () => {
    const c = await openClient();
    for (let i = 0; i < 32; i++) {
      sendRequest(c, 1 + 2 * i, "x-one", `/hold/one-${i}`);
      const answered = await eventually(() => headLists(c, 1 + 2 * i).length > 0, 3000, 5);
      if (!answered) throw new Error(`held call ${i} got no head: ${c.ending(1 + 2 * i)}`);
    }
    expect(one.conns.length).toBe(32);
    sendRequest(c, 65, "x-one", "/hold/one-32");
    sendRequest(c, 67, "x-one", "/hold/one-33");
    await sleep(300);
    c.write(rstFrame(65, E.CANCEL));
    await eventually(() => c.ending(67) !== "open", 4000);
    const timedOut = outcomeOf(c, 67, 0);
    releaseHolds("/hold/one-");
    await eventually(() => Array.from({ length: 32 }, (_, i) => c.ending(1 + 2 * i)).every((e) => e !== "open"), 4000);
    await sleep(300);
    const held = Array.from({ length: 32 }, (_, i) => outcomeOf(c, 1 + 2 * i, 0)).filter((o) => !(o.status === "200" && o.body === "done" && o.ending === "end-stream"));
    expect({
      timedOut: `${timedOut.status} ${timedOut.meshError}`,
      heldNotComplete: held.map(show),
      queuedReachedUpstream: one.of("/hold/one-32").length + one.of("/hold/one-33").length,
      connections: one.conns.length,
      most: Math.max(...one.conns.map((x) => x.maxActive)),
    }).toEqual({ timedOut: "504 timeout", heldNotComplete: [], queuedReachedUpstream: 0, connections: 32, most: 1 });
  }, 30_000);
});

// =======================================================================================
// 4. Sessions in-process: stream ids, and calls let go
// =======================================================================================
describe("client sessions in-process", () => {
  test("stream ids run out (the next would be past 2^31-1, after ~1 billion streams on a long-lived session): the next request goes on a new connection, never with the reserved bit set or an id reused (RFC 9113 §5.1.1)", async () => {
    const pool = new H2Sessions({ connectTimeoutMs: 2000, idleTimeoutMs: 10_000 });
    const authority = `127.0.0.1:${main.port}`;
    const from = main.conns.length;
    const first = pool.session(authority);
    (first as unknown as { nextId: number }).nextId = 2 ** 31 - 1;
    const ask = (path: string) =>
      new Promise<string>((resolve) => {
        let status = "";
        const t = setTimeout(() => resolve("no answer within 3 s"), 3000);
        const handler: UpstreamHandler = {
          response: (h) => (status = String(h[":status"])),
          data() {},
          trailers() {},
          end: () => (clearTimeout(t), resolve(status)),
          drain() {},
          failed: (f) => (clearTimeout(t), resolve(`failed ${f.kind}: ${f.message}`)),
        };
        pool.session(authority).request([":method", "GET", ":scheme", "http", ":path", path, ":authority", "x-main"], true, handler);
      });
    try {
      const a = await ask("/ok/last-id");
      const b = await ask("/ok/after-last-id");
      const conns = main.conns.slice(from);
      const bad = conns.flatMap((c) => c.rawIds.flatMap((raw, i) => (raw > 0x7fffffff || (i > 0 && (raw & 0x7fffffff) <= (c.rawIds[i - 1]! & 0x7fffffff)) ? [`connection ${c.n}: HEADERS with stream field 0x${raw.toString(16)} after 0x${(c.rawIds[i - 1] ?? 0).toString(16)}`] : [])));
      expect({ answers: [a, b], bad }).toEqual({ answers: ["200", "200"], bad: [] });
    } finally {
      first.destroy();
      pool.close();
    }
  }, 15_000);

  test("100 calls that time out (30 ms) while queued on a session whose peer allows 0 streams are not kept alive by it (WeakRef, as review-h2-sessions.test.ts relaysKeptAlive)", async () => {
    const pool = new H2Sessions({ connectTimeoutMs: 60_000, idleTimeoutMs: 60_000 });
    const session = pool.session(`127.0.0.1:${zero.port}`);
    try {
      const { statuses, alive } = await relaysKeptAlive(session);
      expect(statuses).toEqual(Array(100).fill(504));
      expect(alive).toBeLessThanOrEqual(15);
    } finally {
      session.destroy();
      pool.close();
    }
  });
});

// =======================================================================================
// 5. Mirrors that misbehave
// =======================================================================================
describe("a mirror that misbehaves never affects calls", () => {
  test("copies to a mirror that never opens its window, allows 0 streams, or resets each copy: the calls (POST, 50 KB) are answered whole and at once", async () => {
    const wrong: string[] = [];
    for (const m of ["mirror-nowin", "mirror-zero", "mirror-rst"]) {
      const outs = await Promise.all(Array.from({ length: 5 }, (_, i) => call("x-mir", `/${m}/${i}`, { body: Buffer.alloc(50_000, 0x6d) })));
      for (const o of outs) if (o.status !== "200" || o.body !== "ok 50000" || o.ms > 1000) wrong.push(`${m}: ${show(o)}`);
    }
    expect(wrong).toEqual([]);
  });

  test("a mirror that answers each copy's head and then sends nothing, ever: each copy is given up within the mirror's request timeout (300 ms), so the mirror service's own callers are not refused (circuit breaker maxRequests 2) by copies held for ever", async () => {
    for (let i = 0; i < 4; i++) {
      const o = await call("x-mir", `/mirror-stall/${i}`);
      expect(`${o.status} ${o.body}`).toBe("200 ok 0");
    }
    await eventually(() => main.reqs().filter((r) => r.path.startsWith("/mirror-stall/") && shadow(r)).length >= 2, 2000);
    await sleep(1000);
    // One at a time: three at once would pass the breaker's maxRequests 2 by themselves.
    const direct = [];
    for (const i of [0, 1, 2]) direct.push(await call("m-stall", `/ok/direct-${i}`));
    expect(direct.map((o) => `${o.status}${o.meshError ? ` ${o.meshError}` : ""}`)).toEqual(["200", "200", "200"]);
  });
});

// =======================================================================================
// 6. A config change that removes an endpoint
// =======================================================================================
describe("sessions of an endpoint a config change removed", () => {
  test("the stream in flight on it completes; new calls go to the new endpoint; the old session then sends GOAWAY and closes", async () => {
    const c = await openClient(web2.ports.outbound);
    sendRequest(c, 1, "r-svc", "/hold/r1");
    expect(await eventually(() => headLists(c, 1).length > 0, 3000)).toBe(true);
    const reloads = () => (web2.stderr().match(/config reloaded/g) ?? []).length;
    const before = reloads();
    writeFileSync(web2Config, outside("r-svc", [main], `  timeouts: { request: 5s, idle: 30s }\n  retries: { attempts: 0 }\n`).join("\n---\n") + "\n");
    expect(await eventually(() => reloads() > before, 10_000)).toBe(true);
    const after = await call("r-svc", "/ok/r-after", { port: web2.ports.outbound });
    expect(`${after.status} ${after.body} ${main.of("/ok/r-after").length}`).toBe("200 ok 0 1");
    releaseHolds("/hold/r1");
    await eventually(() => c.ending(1) !== "open", 3000);
    const held = outcomeOf(c, 1, 0);
    expect(`${held.status} ${held.body} ${held.ending}`).toBe("200 done end-stream");
    const old = rsrv.conns;
    await eventually(() => old.every((x) => x.closed), 3000);
    expect({ connections: old.length, goaway: old.map((x) => x.goawaysIn[0]), stillOpen: old.filter((x) => !x.closed).length }).toEqual({ connections: 1, goaway: [0], stillOpen: 0 });
  }, 30_000);
});

test("no sidecar printed an unhandled exception through all of the above", () => {
  const lines = [web, web2, api, api2].flatMap((p) => p.stderr().split("\n").filter((l) => /uncaught|unhandled|TypeError|RangeError|ReferenceError|panic|Segmentation/i.test(l)));
  expect(lines).toEqual([]);
});
