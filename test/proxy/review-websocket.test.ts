/**
 * Attacker's review of WebSocket support through the sidecar pair (client → orders
 * outbound, Host: <service> → mTLS → callee inbound → service). Every test asserts the
 * SAFE behaviour, on what the service actually received (bytes) and what the client
 * actually got. Loopback only; every loop bounded.
 *
 * Services: `raw` is a scripted raw HTTP/1.1 server (every byte recorded) that answers
 * upgrades as each path says; `chat` is an echoing Bun WebSocket service; `limited` is the
 * same behind a RateLimitPolicy. `raw` has an AuthorizationPolicy denying /admin and /admin/*.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Socket } from "bun";
import { createHash } from "node:crypto";
import { connect as netConnect } from "node:net";
import { readdirSync } from "node:fs";
import { clientTls, rssMiB } from "../helpers/data-plane.ts";
import { fixtureFor, metricValue } from "../helpers/mesh-fixture.ts";
import { denyPaths } from "../helpers/observability.ts";
import { headerOf, rawServer, type RawRequest, type RawServer } from "../helpers/raw-h1-server.ts";
import { rawExchange } from "../helpers/raw-http.ts";
import { within, WsClient } from "../helpers/ws-client.ts";
import { wsService, type WsService } from "../helpers/ws-service.ts";

const fx = fixtureFor("orders", "raw", "chat", "limited");
const ORDERS = "spiffe://mesh.local/ns/default/sa/orders";
const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const KEY = "dGhlIHNhbXBsZSBub25jZQ==";
const acceptOf = (key: string) => createHash("sha1").update(key + GUID).digest("base64");

type Proxy = Awaited<ReturnType<typeof fx.proxy>>;
let raw: RawServer;
let chat: WsService;
let limited: WsService;
let ordersProxy: Proxy;
let rawProxy: Proxy;
let chatProxy: Proxy;
let rawAdmin: { port: number };

// ---------- frames ----------

interface Frame {
  fin: boolean;
  rsv: number;
  opcode: number;
  masked: boolean;
  payload: Buffer;
}

function frame(opcode: number, payload: Buffer | string, o: { fin?: boolean; mask?: boolean; rsv?: number } = {}): Buffer {
  const p = typeof payload === "string" ? Buffer.from(payload) : payload;
  const mask = o.mask ?? true;
  const b0 = ((o.fin ?? true) ? 0x80 : 0) | ((o.rsv ?? 0) << 4) | opcode;
  let head: Buffer;
  if (p.length < 126) head = Buffer.from([b0, (mask ? 0x80 : 0) | p.length]);
  else if (p.length < 65536) {
    head = Buffer.alloc(4);
    head[0] = b0;
    head[1] = (mask ? 0x80 : 0) | 126;
    head.writeUInt16BE(p.length, 2);
  } else {
    head = Buffer.alloc(10);
    head[0] = b0;
    head[1] = (mask ? 0x80 : 0) | 127;
    head.writeBigUInt64BE(BigInt(p.length), 2);
  }
  if (!mask) return Buffer.concat([head, p]);
  const key = Buffer.from([0x11, 0x22, 0x33, 0x44]);
  const masked = Buffer.from(p.map((c, i) => c ^ key[i & 3]!));
  return Buffer.concat([head, key, masked]);
}

const closePayload = (code: number, reason = "") => {
  const b = Buffer.alloc(2 + Buffer.byteLength(reason));
  b.writeUInt16BE(code, 0);
  b.write(reason, 2);
  return b;
};

function parseFrames(buf: Buffer): { frames: Frame[]; rest: number } {
  const frames: Frame[] = [];
  let at = 0;
  for (;;) {
    if (buf.length - at < 2) break;
    const b0 = buf[at]!;
    const b1 = buf[at + 1]!;
    let len = b1 & 0x7f;
    let off = at + 2;
    if (len === 126) {
      if (buf.length < off + 2) break;
      len = buf.readUInt16BE(off);
      off += 2;
    } else if (len === 127) {
      if (buf.length < off + 8) break;
      len = Number(buf.readBigUInt64BE(off));
      off += 8;
    }
    const masked = (b1 & 0x80) !== 0;
    let key: Buffer | undefined;
    if (masked) {
      if (buf.length < off + 4) break;
      key = buf.subarray(off, off + 4);
      off += 4;
    }
    if (buf.length < off + len) break;
    let payload = Buffer.from(buf.subarray(off, off + len));
    if (key) payload = Buffer.from(payload.map((c, i) => c ^ key![i & 3]!));
    frames.push({ fin: (b0 & 0x80) !== 0, rsv: (b0 >> 4) & 7, opcode: b0 & 0x0f, masked, payload });
    at = off + len;
  }
  return { frames, rest: buf.length - at };
}

const validUtf8 = (b: Buffer) => {
  try {
    new TextDecoder("utf-8", { fatal: true }).decode(b);
    return true;
  } catch {
    return false;
  }
};
const sendableClose = (code: number) => (code >= 1000 && code <= 1014 && code !== 1004 && code !== 1005 && code !== 1006) || (code >= 3000 && code <= 4999);

/** What is wrong with frames one side sent (`fromClient`: must be masked), if anything. */
function frameProblems(frames: Frame[], fromClient: boolean): string[] {
  const out: string[] = [];
  for (const f of frames) {
    if (f.masked !== fromClient) out.push(`opcode ${f.opcode}: masked=${f.masked}`);
    if (f.rsv !== 0) out.push(`opcode ${f.opcode}: rsv=${f.rsv}`);
    if (![0, 1, 2, 8, 9, 10].includes(f.opcode)) out.push(`reserved opcode ${f.opcode}`);
    if (f.opcode >= 8 && (!f.fin || f.payload.length > 125)) out.push(`bad control frame opcode ${f.opcode} fin=${f.fin} len=${f.payload.length}`);
    if (f.opcode === 1 && f.fin && !validUtf8(f.payload)) out.push("invalid UTF-8 text frame");
    if (f.opcode === 8 && f.payload.length === 1) out.push("close with 1-byte payload");
    if (f.opcode === 8 && f.payload.length >= 2 && !sendableClose(f.payload.readUInt16BE(0))) out.push(`close code ${f.payload.readUInt16BE(0)}`);
  }
  return out;
}

// ---------- a raw client ----------

interface RawWs {
  sock: Socket<undefined>;
  bytes(): Buffer;
  closed(): boolean;
  whenClosed(ms: number): Promise<boolean>;
  /** The response head (status line and fields), once it came. */
  head(ms?: number): Promise<string>;
  /** Frames after the head. */
  frames(): Frame[];
  write(b: string | Uint8Array): void;
}

async function rawWs(port: number, request: string): Promise<RawWs> {
  const chunks: Buffer[] = [];
  let closed = false;
  let onClose!: () => void;
  const closedP = new Promise<void>((r) => (onClose = r));
  const sock = await Bun.connect<undefined>({
    hostname: "127.0.0.1",
    port,
    socket: {
      data: (_s, c) => void chunks.push(Buffer.from(c)),
      close: () => {
        closed = true;
        onClose();
      },
      error: () => {
        closed = true;
        onClose();
      },
    },
  });
  sock.write(request);
  const all = () => Buffer.concat(chunks);
  const r: RawWs = {
    sock,
    bytes: all,
    closed: () => closed,
    whenClosed: async (ms) => {
      await Promise.race([closedP, Bun.sleep(ms)]);
      return closed;
    },
    head: async (ms = 8000) => {
      for (const end = Date.now() + ms; Date.now() < end && !all().includes("\r\n\r\n") && !closed; ) await Bun.sleep(5);
      const b = all();
      const i = b.indexOf("\r\n\r\n");
      return i < 0 ? b.toString("latin1") : b.toString("latin1", 0, i);
    },
    frames: () => {
      const b = all();
      const i = b.indexOf("\r\n\r\n");
      return i < 0 ? [] : parseFrames(b.subarray(i + 4)).frames;
    },
    write: (b) => void sock.write(b),
  };
  return r;
}

const upgradeReq = (path: string, host: string, extra: string[] = [], opts: { version?: string; key?: string | null; connection?: string; upgrade?: string; proto?: string } = {}) =>
  [
    `GET ${path} ${opts.proto ?? "HTTP/1.1"}`,
    `Host: ${host}`,
    `Upgrade: ${opts.upgrade ?? "websocket"}`,
    `Connection: ${opts.connection ?? "Upgrade"}`,
    ...(opts.key === null ? [] : [`Sec-WebSocket-Key: ${opts.key ?? KEY}`]),
    `Sec-WebSocket-Version: ${opts.version ?? "13"}`,
    ...extra,
  ].join("\r\n") + "\r\n\r\n";

const statusOf = (head: string) => Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1] ?? 0);
const ADMIN = "GET /admin HTTP/1.1\r\nHost: raw\r\n\r\n";

// ---------- what the raw service got ----------

/** Every request head the raw service parsed whose request line names `path` (exactly). */
const headsFor = (path: string) => raw.requests.filter((q) => q.head.startsWith(`GET ${path} `));
/** Everything the raw service received on the connection whose first request was for `path`, after that head. */
function afterHandshake(path: string): Buffer {
  const q = headsFor(path)[0];
  if (!q) return Buffer.alloc(0);
  const all = Buffer.from(raw.received[q.conn] ?? "", "latin1");
  return all.subarray(all.indexOf("\r\n\r\n") + 4);
}
const everything = () => raw.received.join("");
/** Every request line the raw service ever parsed that names /admin. */
const adminSeen = () => raw.requests.filter((q) => /^\S+ \/+admin/i.test(q.head)).length + (everything().match(/GET \/admin/g)?.length ?? 0);

const upgraded = new Set<number>();

function script(r: RawRequest) {
  if (upgraded.has(r.conn)) return; // bytes after an upgrade are frames, recorded only
  const path = r.head.split(" ")[1] ?? "";
  const key = headerOf(r.head, "sec-websocket-key") ?? "";
  const ok101 = `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${acceptOf(key)}\r\n\r\n`;
  const plain = (status: string, body = "ok") => `HTTP/1.1 ${status}\r\nContent-Length: ${body.length}\r\n\r\n${body}`;
  if (path.startsWith("/admin")) return r.reply(plain("200 OK", "ADMIN-SECRET"));
  if (path.startsWith("/ws-200")) return r.reply(plain("200 OK", "not-upgraded"));
  if (path.startsWith("/ws-400-then-frame")) return r.reply(plain("400 Bad Request", "no") + frame(2, "SMUGGLED-FRAME", { mask: false }).toString("latin1"));
  if (path.startsWith("/ws-400")) return r.reply(plain("400 Bad Request", "no"));
  if (path.startsWith("/ws-426")) return r.reply("HTTP/1.1 426 Upgrade Required\r\nUpgrade: websocket\r\nContent-Length: 2\r\n\r\nno");
  if (path.startsWith("/ws-101-noaccept")) {
    upgraded.add(r.conn);
    return r.reply(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n` + frame(1, "EVIL-NOACCEPT", { mask: false }).toString("latin1"));
  }
  if (path.startsWith("/ws-101-badaccept")) {
    upgraded.add(r.conn);
    return r.reply(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${acceptOf("x")}\r\n\r\n` + frame(1, "EVIL-BADACCEPT", { mask: false }).toString("latin1"));
  }
  if (path.startsWith("/plain-101")) {
    upgraded.add(r.conn);
    return r.reply(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n` + plain("200 OK", "AFTER-101"));
  }
  if (path.startsWith("/ws-evil-")) {
    upgraded.add(r.conn);
    const kind = path.slice("/ws-evil-".length);
    const evil: Record<string, Buffer> = {
      masked: frame(1, "EVIL-MASKED", { mask: true }),
      opcode: frame(3, "EVIL-OPCODE", { mask: false }),
      utf8: frame(1, Buffer.from([0x45, 0x56, 0x49, 0x4c, 0xff, 0xfe, 0xc0, 0xaf]), { mask: false }),
      closecode: frame(8, closePayload(1005, "EVIL-CLOSE"), { mask: false }),
      bigping: frame(9, Buffer.alloc(200, 0x45), { mask: false }),
      rsv: frame(1, "EVIL-RSV", { mask: false, rsv: 4 }),
    };
    return r.reply(ok101 + (evil[kind] ?? Buffer.alloc(0)).toString("latin1"));
  }
  if (path.startsWith("/ws-ok") && /websocket/i.test(headerOf(r.head, "upgrade") ?? "") && key) {
    upgraded.add(r.conn);
    return r.reply(ok101 + frame(1, "hello", { mask: false }).toString("latin1"));
  }
  // A plain request (or an upgrade not scripted): if it carries Upgrade, a naive service switches.
  if (/websocket/i.test(headerOf(r.head, "upgrade") ?? "") && key) {
    upgraded.add(r.conn);
    return r.reply(ok101);
  }
  r.reply(plain("200 OK", "plain"));
}

beforeAll(async () => {
  raw = rawServer(script);
  chat = wsService();
  limited = wsService();
  rawProxy = await fx.proxy("raw", `http://127.0.0.1:${raw.port}`, fx.config("raw", {}, denyPaths("raw", ["/admin", "/admin/*"])));
  chatProxy = await fx.proxy("chat", chat.url);
  const limitedProxy = await fx.proxy(
    "limited",
    limited.url,
    fx.config("limited", {}, `---\napiVersion: mesh.dev/v1alpha1\nkind: RateLimitPolicy\nmetadata:\n  name: limited\nspec:\n  perCaller: { requestsPerSecond: 0.1, burst: 2 }\n`),
  );
  ordersProxy = await fx.proxy(
    "orders",
    fx.echo("orders").url,
    fx.config("orders", { raw: [rawProxy.ports.inbound], chat: [chatProxy.ports.inbound], limited: [limitedProxy.ports.inbound] }),
  );
  rawAdmin = { port: rawProxy.ports.admin };
});
afterAll(() => {
  raw?.stop();
  chat?.stop();
  limited?.stop();
});

const OUT = () => ordersProxy.ports.outbound;

/** A WebSocket through the pair to `chat`, open and past its greeting. */
async function chatClient(path: string) {
  const c = new WsClient(`ws://127.0.0.1:${OUT()}${path}`, { headers: { host: "chat" } });
  expect(await within(c.opened, 10_000, "open")).toBe(true);
  expect((await c.json()).hello).toBe(true);
  return c;
}

/** The pair still carries a fresh WebSocket end to end. */
async function stillServes() {
  const c = await chatClient("/alive");
  c.ws.send("ping-alive");
  expect(await c.next()).toBe("ping-alive");
  c.ws.close(1000);
  await c.closedWithin();
}

// =====================================================================================

describe("upgrade smuggling: a refused upgrade never turns the connection into a raw tunnel", () => {
  test("control: a plain GET /admin through the outbound is denied 403 and never reaches the service", async () => {
    const before = adminSeen();
    const r = await rawExchange(`GET /admin HTTP/1.1\r\nHost: raw\r\nConnection: close\r\n\r\n`, { port: OUT() });
    expect(r.statuses).toEqual([403]);
    expect(adminSeen()).toBe(before);
  });

  for (const [path, status] of [
    ["/ws-200", 200],
    ["/ws-400", 400],
    ["/ws-426", 426],
  ] as const) {
    test(`service answers the upgrade ${status}: client gets ${status} then the connection closes; a GET /admin sent next never reaches the service`, async () => {
      const before = adminSeen();
      const c = await rawWs(OUT(), upgradeReq(path, "raw"));
      const head = await c.head();
      expect(statusOf(head)).toBe(status);
      c.write(ADMIN);
      await Bun.sleep(300);
      c.write(ADMIN);
      const closed = await c.whenClosed(3000);
      c.sock.end();
      await Bun.sleep(100);
      const text = c.bytes().toString("latin1");
      expect({ closed, adminReached: adminSeen() - before, secretLeaked: text.includes("ADMIN-SECRET"), statuses: text.match(/HTTP\/1\.1 \d{3}/g) }).toEqual({
        closed: true,
        adminReached: 0,
        secretLeaked: false,
        statuses: [`HTTP/1.1 ${status}`],
      });
    });
  }

  for (const [name, opts] of [
    ["missing Sec-WebSocket-Key", { key: null }],
    ["Sec-WebSocket-Version: 8", { version: "8" }],
  ] as const) {
    test(`an upgrade with ${name} and a GET /admin pipelined behind it: refused 4xx, closed, nothing of it at the service`, async () => {
      const before = { admin: adminSeen(), heads: raw.requests.length };
      const r = await rawExchange(upgradeReq(`/ws-ok-bad-${name.length}`, "raw", [], opts as never) + ADMIN, { port: OUT(), quietMs: 600 });
      await Bun.sleep(100);
      expect({ first: r.statuses[0]! >= 400 && r.statuses[0]! < 500, count: r.statuses.length, closed: r.closed, admin: adminSeen() - before.admin, secret: r.text.includes("ADMIN-SECRET") }).toEqual({
        first: true,
        count: 1,
        closed: true,
        admin: 0,
        secret: false,
      });
    });
  }

  for (const key of ["!!", "YWJj"]) {
    test(`an upgrade with an invalid Sec-WebSocket-Key (${JSON.stringify(key)}, not 16 bytes of base64) is refused 400 before anything is opened: the service never gets a handshake`, async () => {
      const path = `/ws-ok-badkey-${key.length}`;
      const r = await rawExchange(upgradeReq(path, "raw", [], { key }), { port: OUT(), quietMs: 500 });
      await Bun.sleep(100);
      expect({ status: r.statuses[0], closed: r.closed, serviceHandshakes: headsFor(path).length, serviceSocketOpened: afterHandshake(path).length > 0 || upgraded.has(headsFor(path)[0]?.conn ?? -1) }).toEqual({
        status: 400,
        closed: true,
        serviceHandshakes: 0,
        serviceSocketOpened: false,
      });
    });
  }

  test("an upgrade carrying a Content-Length body that is a GET /admin: refused, body never run", async () => {
    const before = adminSeen();
    const r = await rawExchange(upgradeReq("/ws-ok-cl", "raw", [`Content-Length: ${ADMIN.length}`]) + ADMIN, { port: OUT(), quietMs: 600 });
    await Bun.sleep(100);
    expect({ status: r.statuses[0], closed: r.closed, admin: adminSeen() - before, upgradedAtService: headsFor("/ws-ok-cl").length }).toEqual({ status: 400, closed: true, admin: 0, upgradedAtService: 0 });
  });

  test("an upgrade with a chunked body that is a GET /admin: refused, body never run", async () => {
    const before = adminSeen();
    const body = `${ADMIN.length.toString(16)}\r\n${ADMIN}\r\n0\r\n\r\n`;
    const r = await rawExchange(upgradeReq("/ws-ok-te", "raw", ["Transfer-Encoding: chunked"]) + body, { port: OUT(), quietMs: 600 });
    await Bun.sleep(100);
    expect({ status: r.statuses[0], closed: r.closed, admin: adminSeen() - before, upgradedAtService: headsFor("/ws-ok-te").length }).toEqual({ status: 400, closed: true, admin: 0, upgradedAtService: 0 });
  });

  test("a GET /admin pipelined right behind a successful upgrade is never delivered raw to the service (it is not a frame)", async () => {
    const before = adminSeen();
    const c = await rawWs(OUT(), upgradeReq("/ws-ok-pipelined", "raw") + ADMIN);
    const status = statusOf(await c.head());
    // RFC 6455 §4.1: the client must wait for the answer; refusing (or closing) is fine, a 101 too, as long as no raw byte goes on.
    expect(status === 0 || status === 101 || (status >= 400 && status < 500)).toBe(true);
    await c.whenClosed(3000);
    c.sock.end();
    await Bun.sleep(200);
    const atService = afterHandshake("/ws-ok-pipelined");
    expect(adminSeen() - before).toBe(0);
    expect(atService.includes("GET /admin")).toBe(false);
    expect(frameProblems(parseFrames(atService).frames, true)).toEqual([]);
  });

  test("Upgrade: h2c (with HTTP2-Settings) through the outbound: refused 400, nothing reaches the service", async () => {
    const before = raw.requests.length;
    const r = await rawExchange(`GET /h2c HTTP/1.1\r\nHost: raw\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n`, { port: OUT(), quietMs: 600 });
    expect({ status: r.statuses[0], reached: raw.requests.length - before }).toEqual({ status: 400, reached: 0 });
  });

  test("an HTTP/1.0 upgrade is not switched: client never gets 101, and no Upgrade field reaches the service", async () => {
    const r = await rawExchange(upgradeReq("/plain-10", "raw", [], { proto: "HTTP/1.0" }), { port: OUT(), quietMs: 600 });
    const seen = headsFor("/plain-10");
    expect(r.statuses).not.toContain(101);
    for (const q of seen) expect(headerOf(q.head, "upgrade")).toBeUndefined();
  });

  test("Upgrade: websocket without Connection: Upgrade takes the HTTP path: no Upgrade reaches the service and the client never gets 101", async () => {
    const r = await rawExchange(upgradeReq("/plain-noconn", "raw", [], { connection: "keep-alive" }), { port: OUT(), quietMs: 600 });
    const seen = headsFor("/plain-noconn");
    expect(r.statuses).not.toContain(101);
    for (const q of seen) expect(headerOf(q.head, "upgrade")).toBeUndefined();
  });

  test("a service that answers 101 to a plain GET (no upgrade asked): client gets a 502, never the 101 or what follows", async () => {
    const r = await rawExchange(`GET /plain-101 HTTP/1.1\r\nHost: raw\r\nConnection: close\r\n\r\n`, { port: OUT(), quietMs: 600 });
    expect({ statuses: r.statuses, leaked: r.text.includes("AFTER-101") }).toEqual({ statuses: [502], leaked: false });
  });

  for (const [name, extra, opts] of [
    ["Connection: keep-alive, Upgrade", [], { connection: "keep-alive, Upgrade" }],
    ["Upgrade: websocket, foo", [], { upgrade: "websocket, foo" }],
    ["two Upgrade fields (foo, then websocket)", ["Upgrade: websocket"], { upgrade: "foo" }],
  ] as const) {
    test(`upgrade variant "${name}": the service gets a clean handshake (one Upgrade: websocket, its own key) and the client gets 101`, async () => {
      const path = `/ws-ok-variant-${name.length}`;
      const c = await rawWs(OUT(), upgradeReq(path, "raw", [...extra], opts as never));
      const status = statusOf(await c.head());
      c.sock.end();
      const q = headsFor(path);
      expect(status).toBe(101);
      expect(q.length).toBe(1);
      const upgrades = q[0]!.head.split("\r\n").filter((l) => /^upgrade:/i.test(l));
      expect(upgrades.map((l) => l.split(":")[1]!.trim().toLowerCase())).toEqual(["websocket"]);
      expect(/foo/i.test(q[0]!.head)).toBe(false);
    });
  }
});

describe("an upstream that misbehaves on the handshake", () => {
  for (const [path, what] of [
    ["/ws-101-noaccept", "101 without Sec-WebSocket-Accept"],
    ["/ws-101-badaccept", "101 with a wrong Sec-WebSocket-Accept"],
  ] as const) {
    test(`${what}: the client never gets a WebSocket, nor the frame that followed`, async () => {
      const c = await rawWs(OUT(), upgradeReq(path, "raw"));
      const head = await c.head();
      await c.whenClosed(3000);
      c.sock.end();
      expect({ status: statusOf(head) >= 500, leaked: c.bytes().includes("EVIL-") }).toEqual({ status: true, leaked: false });
    });
  }

  test("an upstream that sends a frame after refusing 400: the client gets 400 and never the frame", async () => {
    const c = await rawWs(OUT(), upgradeReq("/ws-400-then-frame", "raw"));
    const head = await c.head();
    const closed = await c.whenClosed(3000);
    c.sock.end();
    expect({ status: statusOf(head), closed, leaked: c.bytes().includes("SMUGGLED-FRAME") }).toEqual({ status: 400, closed: true, leaked: false });
  });
});

describe("identity on the upgrade", () => {
  test("forged x-mesh-client-id (twice, any case, and the X_Mesh_Client_Id spelling) never reach the service; it sees only the caller's SPIFFE ID", async () => {
    const forged = "spiffe://mesh.local/ns/default/sa/admin";
    const path = "/ws-ok-forged";
    const c = await rawWs(OUT(), upgradeReq(path, "raw", [`x-mesh-client-id: ${forged}`, `X-Mesh-Client-Id: ${forged}`, `x_mesh_client_id: ${forged}`, `X_MESH_CLIENT_ID: ${forged}`]));
    const status = statusOf(await c.head());
    c.sock.end();
    const q = headsFor(path);
    if (status !== 101) {
      // Refusing the underscore spelling outright is also safe.
      expect(q.length).toBe(0);
      return;
    }
    expect(q.length).toBe(1);
    const idLines = q[0]!.head.split("\r\n").filter((l) => /^x[-_]mesh[-_]client[-_]id:/i.test(l));
    expect(idLines.map((l) => l.slice(l.indexOf(":") + 1).trim())).toEqual([ORDERS]);
  });

  test("an upgrade straight at the inbound with a forged x-mesh-tunnel header is refused and never reaches the service", async () => {
    const path = "/ws-ok-forged-tunnel";
    const r = await rawExchange(upgradeReq(path, "raw", [`x-mesh-tunnel: ${crypto.randomUUID()}`]), { port: rawProxy.ports.inbound, tls: clientTls(fx, "orders"), quietMs: 600 });
    expect({ status: r.statuses[0] ?? 0, reached: headsFor(path).length }).toEqual({ status: expect.any(Number), reached: 0 });
    expect(r.statuses[0]).not.toBe(101);
  });
});

describe("authorization and rate limits on upgrades", () => {
  const decodedAdmin = (p: string) => {
    try {
      return /^\/+admin(\/|$)/i.test(decodeURIComponent(new URL(`http://x${p}`).pathname));
    } catch {
      return false;
    }
  };

  for (const path of ["/admin", "/admin/x", "/public/../admin", "/public/%2e%2e/admin", "/public/%2E%2E/admin/x", "//admin", "/%61dmin", "/admin%2F", "/public/..%2Fadmin"]) {
    test(`an upgrade to ${path} (denied /admin, /admin/*) is refused and no handshake for an admin path reaches the service`, async () => {
      const before = raw.requests.filter((q) => decodedAdmin(q.head.split(" ")[1] ?? "")).length;
      const r = await rawExchange(upgradeReq(path, "raw"), { port: OUT(), quietMs: 500 });
      await Bun.sleep(50);
      const after = raw.requests.filter((q) => decodedAdmin(q.head.split(" ")[1] ?? "")).length;
      expect({ status: r.statuses[0], adminHandshakes: after - before }).toEqual({ status: expect.any(Number), adminHandshakes: 0 });
      expect(r.statuses[0]).not.toBe(101);
    });
  }

  test("upgrades over a RateLimitPolicy (burst 2): the third is 429 and never reaches the service", async () => {
    const before = limited.upgrades;
    const statuses: number[] = [];
    const clients: RawWs[] = [];
    for (let i = 0; i < 3; i++) {
      const c = await rawWs(OUT(), upgradeReq(`/rl-${i}`, "limited"));
      statuses.push(statusOf(await c.head()));
      clients.push(c);
    }
    for (const c of clients) c.sock.end();
    expect({ statuses, upgrades: limited.upgrades - before }).toEqual({ statuses: [101, 101, 429], upgrades: 2 });
  });
});

describe("malformed frames from the client", () => {
  const cases: [string, Buffer, number[]][] = [
    ["an unmasked client frame", frame(1, "BAD-UNMASKED", { mask: false }), [1002]],
    ["a reserved opcode (0x3)", frame(3, "BAD-OPCODE"), [1002]],
    ["a ping of 126 bytes (control > 125)", frame(9, Buffer.alloc(126, 0x42)), [1002]],
    ["a fragmented ping (FIN=0)", frame(9, "BAD-FRAG-PING", { fin: false }), [1002]],
    ["invalid UTF-8 in a text frame", frame(1, Buffer.from([0x42, 0x41, 0x44, 0xff, 0xfe, 0xc0, 0xaf])), [1007, 1002]],
    ["RSV1 set with no extension", frame(1, "BAD-RSV", { rsv: 4 }), [1002]],
    ["a close code not allowed on the wire (1005)", frame(8, closePayload(1005, "BAD-CLOSE")), [1002]],
    ["a close code not allowed on the wire (999)", frame(8, closePayload(999, "BAD-CLOSE")), [1002]],
    ["a close frame with a 1-byte payload", frame(8, Buffer.from([0x03])), [1002]],
  ];
  cases.forEach(([name, bad, codes], i) => {
    test(`${name}: client gets Close ${codes.join("/")} (or the connection ends), the service gets only well-formed frames and none of the bad payload`, async () => {
      const path = `/ws-ok-badframe-${i}`;
      const c = await rawWs(OUT(), upgradeReq(path, "raw"));
      expect(statusOf(await c.head())).toBe(101);
      c.write(frame(1, `good-before-${i}`));
      await Bun.sleep(100);
      c.write(bad);
      const closed = await c.whenClosed(4000);
      c.sock.end();
      await Bun.sleep(150);
      const toClient = c.frames();
      const closeFrame = toClient.find((f) => f.opcode === 8);
      const code = closeFrame && closeFrame.payload.length >= 2 ? closeFrame.payload.readUInt16BE(0) : undefined;
      const atService = parseFrames(afterHandshake(path));
      const payloads = atService.frames.map((f) => f.payload.toString("latin1"));
      expect({
        closedOrCloseFrame: closed || closeFrame !== undefined,
        codeIsProtocolError: code === undefined || codes.includes(code),
        clientFrameProblems: frameProblems(toClient, false),
        serviceFrameProblems: frameProblems(atService.frames, true),
        serviceGotBadPayload: payloads.some((p) => p.includes("BAD-") || p.includes("BBBB")),
        serviceGotGoodOne: payloads.includes(`good-before-${i}`),
      }).toEqual({ closedOrCloseFrame: true, codeIsProtocolError: true, clientFrameProblems: [], serviceFrameProblems: [], serviceGotBadPayload: false, serviceGotGoodOne: true });
    });
  });
});

describe("malformed frames from the service", () => {
  for (const kind of ["masked", "opcode", "utf8", "closecode", "bigping", "rsv"]) {
    test(`service sends a bad frame (${kind}): the client gets only well-formed frames, none of the bad payload, and a close`, async () => {
      const c = await rawWs(OUT(), upgradeReq(`/ws-evil-${kind}`, "raw"));
      expect(statusOf(await c.head())).toBe(101);
      const closed = await c.whenClosed(4000);
      c.sock.end();
      const toClient = c.frames();
      expect({
        closedOrCloseFrame: closed || toClient.some((f) => f.opcode === 8),
        problems: frameProblems(toClient, false),
        leaked: toClient.some((f) => f.payload.includes("EVIL") || f.payload.includes("EEEE")),
      }).toEqual({ closedOrCloseFrame: true, problems: [], leaked: false });
    });
  }
});

describe("lifecycle and resources", () => {
  test("service closes with 4002 and a 123-byte multibyte reason: both reach the client intact", async () => {
    const c = await chatClient("/svc-close");
    const reason = "é".repeat(61) + "x"; // 123 bytes: the most a Close frame can carry
    expect(Buffer.byteLength(reason)).toBe(123);
    c.ws.send(`close:4002:${reason}`);
    expect(await c.closedWithin()).toEqual({ code: 4002, reason });
  });

  test("a client that vanishes mid-frame (half a frame, then TCP close) ends the service's side", async () => {
    const c = await rawWs(OUT(), upgradeReq("/vanish-mid-frame", "chat"));
    expect(statusOf(await c.head())).toBe(101);
    await Bun.sleep(100);
    c.write(frame(2, Buffer.alloc(4096, 1)).subarray(0, 1000));
    await Bun.sleep(50);
    c.sock.terminate();
    const seen = async () => chat.closes.some((s) => s.path === "/vanish-mid-frame");
    for (let i = 0; i < 100 && !(await seen()); i++) await Bun.sleep(50);
    expect(chat.closes.find((s) => s.path === "/vanish-mid-frame")).toBeDefined();
  });

  test("a client declaring a 100 MiB frame is cut off (Close 1009 or connection ended) without the sidecars buffering it, and the pair keeps serving", async () => {
    const rssBefore = rssMiB(ordersProxy.proc.pid);
    const c = await rawWs(OUT(), upgradeReq("/huge", "chat"));
    expect(statusOf(await c.head())).toBe(101);
    const head = Buffer.alloc(14);
    head[0] = 0x82;
    head[1] = 0x80 | 127;
    head.writeBigUInt64BE(BigInt(100 << 20), 2);
    c.write(head); // mask key = last 4 zero bytes
    const chunk = Buffer.alloc(1 << 20, 7);
    for (let i = 0; i < 24 && !c.closed(); i++) {
      c.write(chunk);
      await Bun.sleep(5);
    }
    const closed = await c.whenClosed(5000);
    const close = c.frames().find((f) => f.opcode === 8);
    c.sock.terminate();
    expect(closed || close !== undefined).toBe(true);
    if (close) expect(close.payload.readUInt16BE(0)).toBe(1009);
    expect(rssMiB(ordersProxy.proc.pid) - rssBefore).toBeLessThan(64);
    await stillServes();
  });

  test("a client that never reads while the service floods 64 MiB: sidecar memory stays bounded and others are still served", async () => {
    const rss0 = { orders: rssMiB(ordersProxy.proc.pid), chat: rssMiB(chatProxy.proc.pid) };
    const sock = netConnect({ host: "127.0.0.1", port: OUT() });
    await new Promise<void>((r, j) => sock.once("connect", r).once("error", j));
    let head = "";
    const gotHead = new Promise<void>((r) => {
      const on = (b: Buffer) => {
        head += b.toString("latin1");
        if (head.includes("\r\n\r\n")) {
          sock.off("data", on);
          r();
        }
      };
      sock.on("data", on);
    });
    sock.write(upgradeReq("/flood", "chat"));
    await within(gotHead, 8000, "101");
    expect(statusOf(head)).toBe(101);
    sock.pause(); // never read again
    sock.write(frame(1, "flood:64:1048576"));
    await Bun.sleep(2500);
    const rss1 = { orders: rssMiB(ordersProxy.proc.pid), chat: rssMiB(chatProxy.proc.pid) };
    await stillServes();
    sock.destroy();
    expect({ ordersGrowthOk: rss1.orders - rss0.orders < 48, chatGrowthOk: rss1.chat - rss0.chat < 48 }).toEqual({ ordersGrowthOk: true, chatGrowthOk: true });
  });

  test("200 WebSockets opened and closed (20 at a time): descriptors back to baseline, none left open, no MaxListenersExceeded", async () => {
    const fds = (pid: number) => readdirSync(`/proc/${pid}/fd`).length;
    const base = { orders: fds(ordersProxy.proc.pid), chat: fds(chatProxy.proc.pid) };
    const started = Date.now();
    const upgradesBefore = chat.upgrades;
    for (let batch = 0; batch < 10 && Date.now() - started < 20_000; batch++) {
      await Promise.all(
        Array.from({ length: 20 }, async (_, i) => {
          const c = new WsClient(`ws://127.0.0.1:${OUT()}/loop-${batch}-${i}`, { headers: { host: "chat" } });
          if (!(await within(c.opened, 10_000, "open"))) throw new Error(`socket ${batch}/${i} did not open: ${c.error}`);
          await c.next();
          if (i % 2) c.ws.close(1000);
          else c.ws.terminate();
          await within(c.closed, 5000, "close");
        }),
      );
    }
    expect(chat.upgrades - upgradesBefore).toBe(200);
    let open = -1;
    for (let i = 0; i < 60; i++) {
      open = (await metricValue(ordersProxy.ports.admin, "mesh_websockets_open")) + (await metricValue(chatProxy.ports.admin, "mesh_websockets_open"));
      if (open === 0 && fds(ordersProxy.proc.pid) <= base.orders + 4 && fds(chatProxy.proc.pid) <= base.chat + 4) break;
      await Bun.sleep(100);
    }
    expect({
      open,
      ordersFdGrowth: fds(ordersProxy.proc.pid) - base.orders <= 4,
      chatFdGrowth: fds(chatProxy.proc.pid) - base.chat <= 4,
      warnings: [ordersProxy.stderr(), chatProxy.stderr(), rawProxy.stderr()].join("\n").match(/MaxListenersExceeded[^\n]*/g) ?? [],
    }).toEqual({ open: 0, ordersFdGrowth: true, chatFdGrowth: true, warnings: [] });
  });

  test("after all of the above, no sidecar crashed or logged an uncaught error", async () => {
    await stillServes();
    for (const p of [ordersProxy, rawProxy, chatProxy]) expect(p.proc.exitCode).toBeNull();
    const stderr = [ordersProxy.stderr(), rawProxy.stderr(), chatProxy.stderr()].join("\n");
    expect(stderr.match(/(uncaught|unhandled|TypeError|RangeError)[^\n]*/gi) ?? []).toEqual([]);
    void rawAdmin;
  });
});
