/**
 * Attacker's and reliability engineer's review of opaque TCP between sidecars (mesh-tcp/1:
 * src/proxy/tcp, the inbound listener's hand-over in h1-server/listener.ts). Real sidecars
 * on loopback; raw clients speak mesh-tcp/1 (or break it) with real mesh certificates, and a
 * fake callee with db's certificate answers the caller's sidecar as no real one would.
 * Every test asserts the SAFE behaviour. Found by this review and fixed since: a callee that
 * ended (FIN) before its answer byte looked like an ok, empty connection; a sidecar that died
 * mid-stream (its kernel's FIN, no TLS close_notify) looked like a clean end of a cut stream,
 * on either side, which is why the bytes between sidecars are framed (src/proxy/tcp/frames.ts:
 * a direction ends with END); and a refused peer that went on sending was read and decrypted
 * at full speed.
 *
 * Two probes take the listener's idle timeout (30 s) to judge, so they are opened in
 * beforeAll and judged by the last tests, while the others run. The stalled-port probe
 * needs python3 (a listener with a full backlog, which Bun cannot make).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Socket, Subprocess } from "bun";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { mesh } from "../helpers/cli.ts";
import { clientTls, rssMiB } from "../helpers/data-plane.ts";
import { fixtureFor, metricValue } from "../helpers/mesh-fixture.ts";
import type { ClientTls } from "../helpers/raw-http.ts";
import { connectRawPeer, type RawPeer, type RawPeerOptions } from "../helpers/raw-peer.ts";
import { tcpEchoService, type TcpService } from "../helpers/tcp.ts";
import { tcpRecorder, type RecordedConn, type TcpRecorder } from "../helpers/tcp-recorder.ts";
import { eventually } from "../helpers/wait.ts";
import { dataFrames, END_FRAME, FrameReader } from "../../src/proxy/tcp/frames.ts";

const fx = fixtureFor("orders", "db", "web", "gateway", "vault", "victim");
type Sidecar = Awaited<ReturnType<typeof fx.proxy>>;

// ---------------------------------------------------------------------------------------
// Raw clients

const alpnWire = (...protocols: string[]) => Buffer.concat(protocols.map((p) => Buffer.concat([Buffer.from([p.length]), Buffer.from(p, "latin1")])));
const MESH_TCP = alpnWire("mesh-tcp/1");
const preamble = (port: number) => Buffer.from([port >> 8, port & 0xff]);
/** Bytes as a sidecar sends them after the preamble: DATA frames (frames.ts); END is its FIN. */
const framed = (data: string | Uint8Array) => Buffer.from(dataFrames(typeof data === "string" ? Buffer.from(data, "latin1") : data));
const END = Buffer.from(END_FRAME);
/** What a mesh peer read after the answer byte, frames decoded; `ended`: an END frame came. */
function unframe(bytes: Buffer): { payload: string; ended: boolean; malformed: boolean } {
  const parts: Buffer[] = [];
  const r = { ended: false, malformed: false };
  new FrameReader({ data: (chunk, start, end) => void parts.push(Buffer.from(chunk.subarray(start, end))), end: () => void (r.ended = true), malformed: () => void (r.malformed = true) }).push(bytes);
  return { payload: Buffer.concat(parts).toString("latin1"), ...r };
}

const peers: RawPeer[] = [];
/** A raw client (raw-peer.ts), closed at the end of the file whatever happens; on TLS it offers mesh-tcp/1 alone unless `alpn` is given. */
async function tracked(port: number, opts: RawPeerOptions = {}): Promise<RawPeer> {
  const p = await connectRawPeer(port, { alpn: MESH_TCP, ...opts });
  peers.push(p);
  return p;
}

// ---------------------------------------------------------------------------------------
// Services (the recorders: tcp-recorder.ts) and a fake callee

const receivedText = (c: RecordedConn | undefined) => c?.text ?? "";

interface FakeCallee {
  port: number;
  /** Per connection: the port its preamble named, and every byte after it. */
  seen: { port: number; after: Buffer; raw: Buffer }[];
  stop(): void;
}

/**
 * A TLS server with db's certificate, as db's sidecar would present it, that breaks
 * mesh-tcp/1 in the way the preamble's port names:
 * 1 an answer byte no version knows, then bytes; 2 a FIN, no answer; 3 the service's bytes
 * and no answer; 4 "denied", then bytes; 5 a reset, no answer; 6 a proper answer, "hi6", FIN.
 */
function fakeCallee(tls: ClientTls, alpn: Buffer | undefined): FakeCallee {
  const seen: FakeCallee["seen"] = [];
  type St = { buf: Buffer; acted: boolean; rec: FakeCallee["seen"][number] | undefined };
  const listener = Bun.listen<St>({
    hostname: "127.0.0.1",
    port: 0,
    allowHalfOpen: true,
    tls: { cert: tls.cert, key: tls.key, ca: tls.ca, ...(alpn ? { ALPNProtocols: alpn } : {}) },
    socket: {
      open(s) {
        s.data = { buf: Buffer.alloc(0), acted: false, rec: undefined };
      },
      data(s, chunk) {
        const st = s.data;
        st.buf = Buffer.concat([st.buf, Buffer.from(chunk)]);
        if (st.rec === undefined) {
          st.rec = { port: -1, after: Buffer.alloc(0), raw: Buffer.alloc(0) };
          seen.push(st.rec);
        }
        st.rec.raw = st.buf;
        if (st.buf.byteLength < 2) return;
        st.rec.port = (st.buf[0]! << 8) | st.buf[1]!;
        st.rec.after = st.buf.subarray(2);
        if (st.acted) return;
        st.acted = true;
        switch (st.rec.port) {
          case 1:
            s.write(Buffer.concat([Buffer.from([0x7f]), Buffer.from("LEAK1")]));
            break;
          case 2:
            s.end();
            break;
          case 3:
            s.write("EARLY3");
            break;
          case 4:
            s.write(Buffer.concat([Buffer.from([2]), Buffer.from("LEAK4")]));
            break;
          case 5:
            s.terminate();
            break;
          case 6:
            s.write(Buffer.concat([Buffer.from([0]), framed("hi6"), END]));
            s.end();
            break;
        }
      },
      end(s) {
        s.end();
      },
      error() {},
      close() {},
    },
  });
  return { port: listener.port, seen, stop: () => listener.stop(true) };
}

/** A port whose listener never accepts and whose backlog is full: a connect to it hangs (SYNs dropped). */
async function stalledPort(): Promise<{ port: number; stop(): void }> {
  const proc: Subprocess<"pipe", "pipe", "ignore"> = Bun.spawn(
    ["python3", "-c", "import socket,sys\ns=socket.socket()\ns.bind(('127.0.0.1',0))\ns.listen(0)\nprint(s.getsockname()[1],flush=True)\nsys.stdin.read()"],
    { stdin: "pipe", stdout: "pipe", stderr: "ignore" },
  );
  const reader = proc.stdout.getReader();
  const { value } = await reader.read();
  reader.releaseLock();
  const port = Number(new TextDecoder().decode(value).trim());
  // listen(0) queues one connection: this one fills the queue, so the next connect's SYNs are dropped.
  const filler = await Bun.connect({ hostname: "127.0.0.1", port, socket: { data() {} } });
  return {
    port,
    stop() {
      filler.terminate();
      proc.kill("SIGKILL");
    },
  };
}

/** A service that writes as fast as its connection takes it, up to `limit` bytes in all. */
function firehose(limit: number): { port: number; written: () => number; stop(): void } {
  let written = 0;
  const block = Buffer.alloc(1024 * 1024, 0x66);
  const pump = (s: Socket<undefined>) => {
    while (written < limit) {
      const n = s.write(block);
      if (n > 0) written += n;
      if (n < block.byteLength) return;
    }
  };
  const listener = Bun.listen<undefined>({ hostname: "127.0.0.1", port: 0, socket: { open: pump, drain: pump, data() {}, error() {}, close() {} } });
  return { port: listener.port, written: () => written, stop: () => listener.stop(true) };
}

// ---------------------------------------------------------------------------------------
// The mesh

const doc = (kind: string, name: string, spec: string) => `---\napiVersion: mesh.dev/v1alpha1\nkind: ${kind}\nmetadata:\n  name: ${name}\nspec:\n${spec}`;
const tcpPort = (name: string, port: number, target: number) => `    - {name: ${name}, port: ${port}, protocol: tcp, targetPort: ${target}}\n`;
const endpoints = (...ports: number[]) => `  endpoints:\n${ports.map((p) => `    - {address: 127.0.0.1, port: ${p}}\n`).join("")}`;
const write = (name: string, text: string) => {
  const path = join(fx.tmp.path, `${name}.yaml`);
  writeFileSync(path, text);
  return path;
};

let echo: TcpService;
let hidden: TcpService;
let resetter: TcpRecorder;
let closer: TcpRecorder;
let sink: TcpRecorder;
let watch: TcpRecorder;
let vaultSvc: TcpRecorder;
let victimSvc: TcpRecorder;
let stall: { port: number; stop(): void };
let fire: { port: number; written: () => number; stop(): void };
let fake: FakeCallee;
let noAlpn: FakeCallee;
let db: Sidecar;
let orders: Sidecar;
let orders2: Sidecar;
let gateway: Sidecar;
let vault: Sidecar;
let victim: Sidecar;
let dbHttp: ReturnType<typeof fx.service>;
/** orders' local listeners, by upstream. */
const local: Record<string, number> = {};
const UPSTREAMS = ["db:5432", "db:5440", "db:5441", "db:5442", "db:5444", "capped:5432", "capped:5433", ...[1, 2, 3, 4, 5, 6].map((n) => `fake:${1000 + n}`), "plain:5432", "victim:5432"];

/** Probes judged by the last tests (see the file's comment). */
let probesAt = 0;
let silent: RawPeer;
const heldRefused: RawPeer[] = [];

const GATEWAY_MAX = 3;

beforeAll(async () => {
  echo = tcpEchoService();
  hidden = tcpEchoService();
  // The service answers a byte, then resets.
  resetter = tcpRecorder({ data: (c) => void (c.sock.write("partial"), c.sock.terminate()) });
  // The service speaks first, half-closes, and keeps reading until the client's FIN.
  closer = tcpRecorder({ open: (c) => void (c.sock.write("first"), c.sock.shutdown()) });
  // The service never reads.
  sink = tcpRecorder({ open: (c) => c.sock.pause() });
  // The service echoes, and records how each connection ended.
  watch = tcpRecorder({ data: (c, chunk) => void c.sock.write(chunk) });
  vaultSvc = tcpRecorder({ data: (c, chunk) => void c.sock.write(chunk) });
  victimSvc = tcpRecorder({ data: (c, chunk) => void c.sock.write(chunk) });
  stall = await stalledPort();
  fire = firehose(256 * 1024 * 1024);
  fake = fakeCallee(clientTls(fx, "db"), MESH_TCP);
  noAlpn = fakeCallee(clientTls(fx, "db"), undefined);
  // db's HTTP service: /slow answers after 400 ms.
  dbHttp = fx.service(async (req) => {
    const path = new URL(req.url).pathname;
    if (path.startsWith("/slow")) await Bun.sleep(400);
    return new Response(`served ${path}\n`);
  });

  const dbPorts =
    `  ports:\n    - {name: http, port: 80}\n` +
    tcpPort("pg", 5432, echo.port) +
    tcpPort("rst", 5440, resetter.port) +
    tcpPort("half", 5441, closer.port) +
    tcpPort("sink", 5442, sink.port) +
    tcpPort("stall", 5443, stall.port) +
    tcpPort("watch", 5444, watch.port) +
    tcpPort("fire", 5445, fire.port);
  const denyWeb = doc("AuthorizationPolicy", "no-web", "  service: db\n  action: deny\n  rules:\n    - from: { services: [web] }\n");
  [db, gateway, vault, victim] = await Promise.all([
    fx.proxy("db", dbHttp.url, write("db", doc("Service", "db", dbPorts) + denyWeb)),
    fx.proxy("gateway", fx.echo("gateway-web").url, write("gateway", doc("Service", "gateway", `  ports:\n${tcpPort("pg", 5432, echo.port)}`)), ["--max-connections", String(GATEWAY_MAX)]),
    fx.proxy("vault", fx.echo("vault-web").url, write("vault", doc("Service", "vault", `  ports:\n${tcpPort("pg", 5432, vaultSvc.port)}`)), ["--drain-timeout", "5s"]),
    fx.proxy("victim", fx.echo("victim-web").url, write("victim", doc("Service", "victim", `  ports:\n${tcpPort("pg", 5432, victimSvc.port)}`))),
  ]);

  const callerView =
    doc("Service", "db", dbPorts + endpoints(db.ports.inbound)) +
    // db under another name, behind a breaker of two connections; its 5433 is a port db's own Service does not declare.
    doc("Service", "capped", `  identity: db\n  ports:\n${tcpPort("pg", 5432, echo.port)}${tcpPort("hid", 5433, hidden.port)}${endpoints(db.ports.inbound)}`) +
    doc("DestinationPolicy", "capped", "  service: capped\n  circuitBreaker: {maxConnections: 2}\n") +
    // The fake callee, with db's certificate; each port's target names its misbehaviour. One connection at a time.
    doc("Service", "fake", `  identity: db\n  ports:\n${[1, 2, 3, 4, 5, 6].map((n) => tcpPort(`f${n}`, 1000 + n, n)).join("")}${endpoints(fake.port)}`) +
    doc("DestinationPolicy", "fake", "  service: fake\n  circuitBreaker: {maxConnections: 1}\n") +
    // A callee sidecar that will crash (SIGKILL) mid-stream.
    doc("Service", "victim", `  ports:\n${tcpPort("pg", 5432, victimSvc.port)}${endpoints(victim.ports.inbound)}`) +
    // A server with db's certificate that does not speak mesh-tcp/1 at all.
    doc("Service", "plain", `  identity: db\n  ports:\n${tcpPort("pg", 5432, 6)}${endpoints(noAlpn.port)}`);
  let ports: number[];
  [orders, orders2] = await Promise.all([
    fx.proxy("orders", fx.echo("orders-web").url, write("orders", callerView), UPSTREAMS.flatMap((u) => ["--tcp-upstream", `${u}=127.0.0.1:0`])),
    fx.proxy("orders", fx.echo("orders2-web").url, write("orders2", doc("Service", "db", dbPorts + endpoints(db.ports.inbound))), ["--tcp-upstream", "db:5432=127.0.0.1:0", "--tcp-upstream", "db:5444=127.0.0.1:0", "--max-connections", "3"]),
  ]);
  ports = (orders.ready as { tcp: number[] }).tcp;
  UPSTREAMS.forEach((u, i) => (local[u] = ports[i]!));

  // The slow probes: a peer that never sends its preamble (db), and peers refused that never close (gateway, at its limit).
  probesAt = Date.now();
  silent = await tracked(db.ports.inbound, { tls: clientTls(fx, "gateway") });
  for (let i = 0; i < GATEWAY_MAX; i++) {
    const p = await tracked(gateway.ports.inbound, { tls: clientTls(fx, "orders") });
    p.write(preamble(0));
    heldRefused.push(p);
  }
  await Promise.all(heldRefused.map((p) => p.until((q) => q.ended || q.closed, 5000)));
}, 60_000);

afterAll(() => {
  for (const p of peers) p.terminate();
  for (const s of [echo, hidden, resetter, closer, sink, watch, vaultSvc, victimSvc, stall, fire, fake, noAlpn]) s?.stop();
});

const tcpTotal = (side: Sidecar, labels: Record<string, string>) => metricValue(side.ports.admin, "mesh_tcp_connections_total", labels);
const dbIn = (result: string, peer = "gateway") => tcpTotal(db, { direction: "inbound", peer, result });
const ordersOut = (peer: string, result: string) => tcpTotal(orders, { direction: "outbound", peer, result });

/** A raw mesh peer (gateway's certificate) with `bytes` written at once. */
async function meshPeer(port: number, bytes: Uint8Array, tls: Partial<ClientTls> = clientTls(fx, "gateway")): Promise<RawPeer> {
  const p = await tracked(port, { tls });
  if (!p.closed && bytes.byteLength > 0) p.write(bytes);
  return p;
}

/** An application's connection to one of orders' local listeners. */
const app = (upstream: string) => tracked(local[upstream]!);

// ---------------------------------------------------------------------------------------

describe("a mesh peer speaking mesh-tcp/1 straight to db's inbound", () => {
  test("ports db's Service does not declare tcp reach nothing: the sidecar's admin, inbound and outbound ports, the HTTP service, an undeclared service, 0 and 65535", async () => {
    const targets = [db.ports.admin, db.ports.inbound, db.ports.outbound, Number(new URL(dbHttp.url).port), hidden.port, 0, 65535];
    const before = await dbIn("no-such-port");
    for (const port of targets) {
      const p = await meshPeer(db.ports.inbound, Buffer.concat([preamble(port), framed("GET /config_dump HTTP/1.1\r\nHost: x\r\n\r\n")]));
      expect(await p.until((q) => q.ended || q.closed, 5000)).toBe(true);
      expect({ port, answer: [...p.bytes] }).toEqual({ port, answer: [1] });
      p.terminate();
    }
    expect(hidden.accepted).toBe(0);
    expect(await eventually(async () => (await dbIn("no-such-port")) - before === targets.length, 3000)).toBe(true);
    await Bun.sleep(200);
    // Each refusal counted once.
    expect((await dbIn("no-such-port")) - before).toBe(targets.length);
  });

  test("a preamble split byte by byte, and the bytes after it one at a time, reach the service in order", async () => {
    const p = await meshPeer(db.ports.inbound, new Uint8Array(0));
    for (const b of [...preamble(echo.port), ...framed("ping")]) {
      p.write(new Uint8Array([b]));
      await Bun.sleep(30);
    }
    expect(await p.until((q) => unframe(q.bytes.subarray(1)).payload.length >= 4, 5000)).toBe(true);
    p.end(END);
    expect(await p.until((q) => q.closed, 5000)).toBe(true);
    expect(p.bytes[0]).toBe(0);
    expect(unframe(p.bytes.subarray(1))).toEqual({ payload: "pingbye 4", ended: true, malformed: false });
    expect(p.error).toBeUndefined();
  });

  test("a preamble and 1 MiB at once (past the 64 KiB hold limit, before the service is connected): every byte arrives, in order", async () => {
    const payload = Buffer.alloc(1024 * 1024);
    for (let i = 0; i < payload.length; i++) payload[i] = (i * 7 + (i >> 9)) & 0xff;
    const p = await meshPeer(db.ports.inbound, new Uint8Array(0));
    const wire = Buffer.concat([preamble(echo.port), framed(payload), END]);
    expect(await p.writeAll(wire, 10_000)).toBe(wire.length);
    p.end();
    expect(await p.until((q) => q.closed, 15_000)).toBe(true);
    expect(p.bytes[0]).toBe(0);
    const got = unframe(p.bytes.subarray(1));
    expect({ ended: got.ended, length: got.payload.length }).toEqual({ ended: true, length: payload.length + `bye ${payload.length}`.length });
    expect(got.payload === payload.toString("latin1") + `bye ${payload.length}`).toBe(true);
  });

  test("a flood while the service's port does not accept: the sidecar takes a bounded amount, its memory stays bounded, and the connect timeout refuses it", async () => {
    const rssBefore = rssMiB(db.proc.pid);
    const p = await meshPeer(db.ports.inbound, preamble(stall.port));
    const taken = await p.flood(Buffer.alloc(1024 * 1024, 0x61), 3000);
    const rssAfter = rssMiB(db.proc.pid);
    // Kernel buffers (client send, sidecar receive) plus the 64 KiB held: tens of MiB at most, not what 3 s of loopback carries.
    expect(taken).toBeLessThan(64 * 1024 * 1024);
    expect(rssAfter - rssBefore).toBeLessThan(64);
    // 5 s after the preamble, the local connect gives up: "upstream-failed".
    expect(await p.until((q) => q.bytes.byteLength > 0 || q.closed, 8000)).toBe(true);
    expect(p.bytes[0]).toBe(3);
    p.terminate();
    expect(await eventually(async () => (await dbIn("upstream-failed")) === 1, 3000)).toBe(true);
  }, 20_000);

  test("a service that never reads: backpressure reaches the peer, and the sidecar's memory stays bounded", async () => {
    const rssBefore = rssMiB(db.proc.pid);
    const p = await meshPeer(db.ports.inbound, preamble(sink.port));
    expect(await p.until((q) => q.bytes.byteLength > 0, 5000)).toBe(true);
    expect(p.bytes[0]).toBe(0);
    const taken = await p.flood(framed(Buffer.alloc(1024 * 1024 - 4, 0x62)), 3000);
    const rssAfter = rssMiB(db.proc.pid);
    // Four kernel buffers at most (up to 32 MiB receive each on this kernel), never the ~GiB 3 s of loopback would carry.
    expect(taken).toBeLessThan(160 * 1024 * 1024);
    expect(rssAfter - rssBefore).toBeLessThan(96);
    p.terminate();
    expect(await eventually(() => sink.conns.every((c) => c.closed), 5000)).toBe(true);
  }, 20_000);

  test("a service that writes faster than the peer reads: backpressure reaches the service, and the sidecar's memory stays bounded", async () => {
    const rssBefore = rssMiB(db.proc.pid);
    const p = await meshPeer(db.ports.inbound, preamble(fire.port));
    expect(await p.until((q) => q.bytes.byteLength > 0, 5000)).toBe(true);
    p.sock.pause();
    await Bun.sleep(3000);
    const r = { answer: p.bytes[0], written: fire.written(), rssGrowth: rssMiB(db.proc.pid) - rssBefore };
    p.terminate();
    expect(r.answer).toBe(0);
    // Kernel buffers on both legs, not the 256 MiB the service would write if nothing held it back.
    expect(r.written).toBeLessThan(160 * 1024 * 1024);
    expect(r.rssGrowth).toBeLessThan(96);
  }, 15_000);

  test("a preamble and the peer's FIN, nothing else: the service sees the FIN and its answer comes back", async () => {
    const p = await meshPeer(db.ports.inbound, preamble(echo.port));
    p.end(END);
    expect(await p.until((q) => q.closed, 5000)).toBe(true);
    expect({ answer: p.bytes[0], rest: unframe(p.bytes.subarray(1)), error: p.error }).toEqual({ answer: 0, rest: { payload: "bye 0", ended: true, malformed: false }, error: undefined });
  });

  test("a preamble then a reset, before and after the join: nothing is left open at the service, each counted once", async () => {
    const before = echo.open;
    const early = await meshPeer(db.ports.inbound, Buffer.concat([preamble(echo.port), framed("x")]));
    early.terminate();
    const late = await meshPeer(db.ports.inbound, Buffer.concat([preamble(echo.port), framed("y")]));
    expect(await late.until((q) => q.bytes.byteLength >= 2, 5000)).toBe(true);
    late.terminate();
    expect(await eventually(() => echo.open === before, 5000)).toBe(true);
    expect(await eventually(async () => (await metricValue(db.ports.admin, "mesh_tcp_connections_open", { direction: "inbound" })) <= 1, 5000)).toBe(true); // the silent probe
  });

  test("a denied caller that sends its bytes with the preamble: answered 'denied', and not a byte reaches the service", async () => {
    const accepted = echo.accepted;
    const received = echo.received;
    const p = await meshPeer(db.ports.inbound, Buffer.concat([preamble(echo.port), framed("DROP TABLE orders;")]), clientTls(fx, "web"));
    expect(await p.until((q) => q.ended || q.closed, 5000)).toBe(true);
    expect([...p.bytes]).toEqual([2]);
    await Bun.sleep(200);
    expect({ accepted: echo.accepted, received: echo.received }).toEqual({ accepted, received });
    expect(await dbIn("denied", "web")).toBe(1);
  });

  test("a refused peer that goes on sending is not read on: the sidecar stops taking its bytes", async () => {
    const p = await meshPeer(db.ports.inbound, preamble(0));
    expect(await p.until((q) => q.bytes.byteLength > 0, 5000)).toBe(true);
    expect(p.bytes[0]).toBe(1);
    const taken = await p.flood(Buffer.alloc(1024 * 1024, 0x63), 2000);
    p.terminate();
    // Kernel buffers hold a few tens of MiB at most; more means the sidecar reads (and decrypts) for nothing.
    expect(taken).toBeLessThan(64 * 1024 * 1024);
  });

  test("no client certificate, offering only mesh-tcp/1: refused, nothing reaches the service", async () => {
    const accepted = echo.accepted;
    const ca = clientTls(fx, "gateway").ca;
    const p = await tracked(db.ports.inbound, { tls: { ca } });
    p.write(Buffer.concat([preamble(echo.port), Buffer.from("hello")]));
    expect(await p.until((q) => q.closed, 5000)).toBe(true);
    expect(p.bytes.byteLength).toBe(0);
    expect(echo.accepted).toBe(accepted);
  });

  test("a certificate from another CA of the same trust domain: refused, nothing reaches the service", async () => {
    const otherCa = join(fx.tmp.path, "other-ca");
    const out = join(fx.tmp.path, "other-certs");
    expect((await mesh("ca", "init", "--trust-domain", "mesh.local", "--out", otherCa)).code).toBe(0);
    expect((await mesh("ca", "issue", "--service", "gateway", "--ca-dir", otherCa, "--out", out, "--force")).code).toBe(0);
    const tls = { cert: readFileSync(join(out, "chain.pem"), "utf8"), key: readFileSync(join(out, "key.pem"), "utf8"), ca: readFileSync(join(out, "bundle.pem"), "utf8") };
    const accepted = echo.accepted;
    const p = await tracked(db.ports.inbound, { tls });
    p.write(Buffer.concat([preamble(echo.port), Buffer.from("hello")]));
    expect(await p.until((q) => q.closed || q.ended, 5000)).toBe(true);
    await Bun.sleep(200);
    expect(p.bytes.byteLength).toBe(0);
    expect(echo.accepted).toBe(accepted);
  });
});

describe("a callee that breaks mesh-tcp/1 (a fake with db's certificate)", () => {
  const outboundOpen = () => metricValue(orders.ports.admin, "mesh_tcp_connections_open", { direction: "outbound" });
  const inflightOf = async (name: string) => {
    const dump = await (await fetch(`http://127.0.0.1:${orders.ports.admin}/config_dump`)).json();
    return (dump.destinations as { name: string; endpoints: { inflight: number }[] }[]).find((d) => d.name === name)!.endpoints.map((e) => e.inflight);
  };

  /**
   * Through orders' fake:<1000+n>: the application writes, and reads until the connection
   * closes or ends (then it ends its side too, as a client that reads EOF does).
   */
  async function viaFake(n: number) {
    const seen = fake.seen.length;
    const p = await app(`fake:${1000 + n}`);
    p.write(`client-${n}`);
    await p.until((q) => q.closed || q.ended, 5000);
    const r = { text: p.text, reset: p.error !== undefined, cleanEnd: p.ended && p.error === undefined };
    if (!p.closed) p.end();
    await p.until((q) => q.closed, 2000);
    p.terminate();
    await eventually(async () => (await outboundOpen()) === 0, 3000);
    // The caller's sidecar named the target port and sent the client's bytes without waiting for an answer.
    const sent = fake.seen[seen];
    return { ...r, portNamed: sent?.port, bytesSent: sent && unframe(sent.after).payload };
  }

  test("an answer byte no version knows: the application sees a reset and none of the callee's bytes; counted bad-answer", async () => {
    const r = await viaFake(1);
    expect(r).toMatchObject({ text: "", reset: true, portNamed: 1, bytesSent: "client-1" });
    expect(await eventually(async () => (await ordersOut("fake", "bad-answer")) === 1, 3000)).toBe(true);
  });

  test("a callee that ends (FIN) without an answer: the application sees a reset, not a clean empty end, and it is not counted ok", async () => {
    const okBefore = await ordersOut("fake", "ok");
    const r = await viaFake(2);
    await Bun.sleep(200);
    expect({ text: r.text, reset: r.reset, cleanEnd: r.cleanEnd, countedOk: (await ordersOut("fake", "ok")) - okBefore }).toEqual({ text: "", reset: true, cleanEnd: false, countedOk: 0 });
  });

  test("the service's bytes before any answer: refused, none passed on; counted bad-answer", async () => {
    const r = await viaFake(3);
    expect(r).toMatchObject({ text: "", reset: true, portNamed: 3 });
    expect(await eventually(async () => (await ordersOut("fake", "bad-answer")) === 2, 3000)).toBe(true);
  });

  test("a refusal followed by bytes: none reach the application; counted denied, once", async () => {
    const r = await viaFake(4);
    expect(r).toMatchObject({ text: "", reset: true, portNamed: 4 });
    expect(await eventually(async () => (await ordersOut("fake", "denied")) === 1, 3000)).toBe(true);
    await Bun.sleep(200);
    expect(await ordersOut("fake", "denied")).toBe(1);
  });

  test("a reset instead of an answer: the application sees a reset", async () => {
    const r = await viaFake(5);
    expect(r).toMatchObject({ text: "", reset: true, portNamed: 5 });
  });

  test("a server with the right certificate that does not choose mesh-tcp/1: refused before a byte is sent to it", async () => {
    const p = await app("plain:5432");
    p.write("secret");
    expect(await p.until((q) => q.closed, 5000)).toBe(true);
    expect({ text: p.text, reset: p.error !== undefined }).toEqual({ text: "", reset: true });
    await Bun.sleep(200);
    expect(noAlpn.seen.length).toBe(0);
    expect(await ordersOut("plain", "peer-without-tcp")).toBe(1);
    expect(await inflightOf("plain")).toEqual([0]);
  });

  test("after all of them the destination's one breaker slot and the endpoint's inflight are back: a proper answer goes through", async () => {
    expect(await eventually(async () => (await outboundOpen()) === 0, 3000)).toBe(true);
    expect(await inflightOf("fake")).toEqual([0]);
    const r = await viaFake(6);
    expect(r).toMatchObject({ text: "hi6", reset: false, portNamed: 6, bytesSent: "client-6" });
    expect(await inflightOf("fake")).toEqual([0]);
    // Every connection to fake counted once: six tries, whatever their results.
    const total = await tcpTotal(orders, { direction: "outbound", peer: "fake" });
    expect(total).toBe(6);
  });
});

describe("resets and half-closes through the pair", () => {
  test("the service resets: the application sees a reset, never a clean end", async () => {
    const p = await app("db:5440");
    p.write("go");
    expect(await p.until((q) => q.closed, 5000)).toBe(true);
    expect(p.error).toBeDefined();
  });

  test("the application resets: the service sees a reset, never a clean end", async () => {
    const n = watch.conns.length;
    const p = await app("db:5444");
    p.write("hello");
    expect(await p.until((q) => q.text === "hello", 5000)).toBe(true);
    p.terminate();
    expect(await eventually(() => watch.conns[n]?.closed === true, 5000)).toBe(true);
    const c = watch.conns[n]!;
    expect({ ended: c.ended, reset: c.error !== undefined }).toEqual({ ended: false, reset: true });
  });

  test("the service half-closes first and keeps reading: the application reads its bytes and its FIN, and what it sends after still reaches the service", async () => {
    const n = closer.conns.length;
    const p = await app("db:5441");
    const sawFin = await p.until((q) => q.text === "first" && q.ended, 5000);
    p.write("after-fin");
    await Bun.sleep(300);
    p.end();
    await eventually(() => closer.conns[n]?.ended === true || closer.conns[n]?.closed === true, 3000);
    await p.until((q) => q.closed, 3000);
    const c = closer.conns[n];
    // Bun reports a FIN on a socket whose own side is already shut as a close without error, not an end.
    const serviceSawFin = c !== undefined && (c.ended || (c.closed && c.error === undefined));
    expect({ sawFin, appError: p.error, serviceGot: receivedText(c), serviceSawFin, serviceError: c?.error }).toEqual({
      sawFin: true, appError: undefined, serviceGot: "after-fin", serviceSawFin: true, serviceError: undefined,
    });
  });
});

describe("connection limits", () => {
  test("--max-connections 3 on the caller's sidecar counts its TCP local listeners: a 4th connection is closed at accept, and a freed place is taken again", async () => {
    const port = (orders2.ready as { tcp: number[] }).tcp[0]!;
    const held: RawPeer[] = [];
    for (let i = 0; i < 3; i++) {
      const p = await tracked(port);
      p.write(`h${i}`);
      expect(await p.until((q) => q.text === `h${i}`, 5000)).toBe(true);
      held.push(p);
    }
    const extra = await tracked(port);
    extra.write("over");
    expect(await extra.until((q) => q.closed, 5000)).toBe(true);
    expect(extra.text).toBe("");
    held[0]!.terminate();
    await Bun.sleep(300);
    const again = await tracked(port);
    again.write("again");
    expect(await again.until((q) => q.text === "again", 5000)).toBe(true);
    for (const p of [...held, again]) p.terminate();
  });

  test("a TCP connection closed at accept for the limit is counted in mesh_connections_refused_total, as an HTTP one is", async () => {
    expect(await metricValue(orders2.ports.admin, "mesh_connections_refused_total")).toBeGreaterThanOrEqual(1);
  });

  test("circuitBreaker.maxConnections: 2 caps carried connections to a destination; refused as max-connections; slots come back after the callee's refusals", async () => {
    const held: RawPeer[] = [];
    for (let i = 0; i < 2; i++) {
      const p = await app("capped:5432");
      p.write(`c${i}`);
      expect(await p.until((q) => q.text === `c${i}`, 5000)).toBe(true);
      held.push(p);
    }
    const third = await app("capped:5432");
    third.write("third");
    expect(await third.until((q) => q.closed, 5000)).toBe(true);
    expect(third.text).toBe("");
    expect(third.error).toBeDefined();
    expect(await ordersOut("capped", "max-connections")).toBe(1);
    for (const p of held) p.end();
    expect(await eventually(() => held.every((p) => p.closed), 5000)).toBe(true);
    // Three refusals by the callee (db's Service does not declare 5433): each must give its slot back.
    for (let i = 0; i < 3; i++) {
      const r = await app("capped:5433");
      r.write("x");
      expect(await r.until((q) => q.closed, 5000)).toBe(true);
    }
    expect(await eventually(async () => (await ordersOut("capped", "no-such-port")) === 3, 3000)).toBe(true);
    const again: RawPeer[] = [];
    for (let i = 0; i < 2; i++) {
      const p = await app("capped:5432");
      p.write(`d${i}`);
      expect(await p.until((q) => q.text === `d${i}`, 5000)).toBe(true);
      again.push(p);
    }
    for (const p of again) p.end();
    expect(await eventually(() => again.every((p) => p.closed), 5000)).toBe(true);
  });
});

describe("HTTP on the inbound, now half-open", () => {
  const GET = (path: string) => `GET ${path} HTTP/1.1\r\nHost: db\r\n\r\n`;
  const responses = (text: string) => (text.match(/HTTP\/1\.1 200/g) ?? []).length;

  test("keep-alive: two requests on one mTLS connection are both answered", async () => {
    const p = await tracked(db.ports.inbound, { tls: clientTls(fx, "orders"), alpn: alpnWire("http/1.1") });
    p.write(GET("/one"));
    expect(await p.until((q) => responses(q.text) === 1 && q.text.includes("/one"), 5000)).toBe(true);
    p.write(GET("/two"));
    expect(await p.until((q) => responses(q.text) === 2 && q.text.includes("/two"), 5000)).toBe(true);
    expect(p.closed).toBe(false);
    p.terminate();
  });

  /** A request, then the client's FIN `finAfterMs` later: how many responses came back, and how many times the service ran it. */
  async function halfClosed(port: number, tls: boolean, path: string, finAfterMs: number) {
    const hits = dbHttp.hits;
    const p = await tracked(port, tls ? { tls: clientTls(fx, "orders"), alpn: alpnWire("http/1.1") } : {});
    p.write(GET(path));
    if (finAfterMs > 0) await Bun.sleep(finAfterMs);
    p.end();
    await p.until((q) => q.closed || responses(q.text) === 1, 3000);
    await Bun.sleep(600);
    const r = { responses: responses(p.text), ranAtService: dbHttp.hits - hits };
    p.terminate();
    return r;
  }

  test("a client's FIN during a request is its leaving, on the half-open inbound as on the plain outbound: nothing is answered after it", async () => {
    // The request itself is cancelled at the service (client-gone.test.ts), as nginx (499) and Envoy do.
    const inbound = await halfClosed(db.ports.inbound, true, "/slow-in", 100);
    const outbound = await halfClosed(orders.ports.outbound, false, "/slow-out", 100);
    expect({ inbound: inbound.responses, outbound: outbound.responses }).toEqual({ inbound: 0, outbound: 0 });
  });
});

describe("a sidecar that dies mid-stream (SIGKILL: its kernel sends a FIN, no TLS close_notify)", () => {
  test("the callee's sidecar dies: the application sees a reset, never a clean end of a cut stream", async () => {
    const p = await app("victim:5432");
    p.write("row 1 of 2;");
    const echoed = await p.until((q) => q.text === "row 1 of 2;", 5000);
    victim.proc.kill("SIGKILL");
    await victim.proc.exited;
    await p.until((q) => q.closed || q.ended, 5000);
    const r = { echoed, text: p.text, reset: p.error !== undefined, cleanEnd: p.ended && p.error === undefined };
    p.terminate();
    expect(r).toEqual({ echoed: true, text: "row 1 of 2;", reset: true, cleanEnd: false });
  });

  test("the caller's sidecar dies: the service sees a reset, never a clean end of a cut stream", async () => {
    const n = watch.conns.length;
    const p = await tracked((orders2.ready as { tcp: number[] }).tcp[1]!);
    p.write("INSERT 1 of 2;");
    const echoed = await p.until((q) => q.text === "INSERT 1 of 2;", 5000);
    orders2.proc.kill("SIGKILL");
    await orders2.proc.exited;
    await eventually(() => watch.conns[n]?.closed === true || watch.conns[n]?.ended === true, 5000);
    const c = watch.conns[n];
    p.terminate();
    expect({ echoed, serviceGot: receivedText(c), serviceSawCleanFin: c?.ended === true && c.error === undefined }).toEqual({ echoed: true, serviceGot: "INSERT 1 of 2;", serviceSawCleanFin: false });
  });
});

describe("bounded lifetimes, judged last (the inbound's idle timeout is 30 s)", () => {
  const sinceProbes = async (ms: number) => {
    const wait = probesAt + ms - Date.now();
    if (wait > 0) await Bun.sleep(wait);
  };

  test("a peer that never sends its preamble is closed once the idle timeout passes", async () => {
    // 30 s, and Bun's socket timeouts fire on 4-second ticks.
    await sinceProbes(36_000);
    expect(await silent.until((q) => q.ended || q.closed, 2000)).toBe(true);
    silent.terminate();
  }, 45_000);

  test("refused connections whose peer never closes give their places in the callee's connection budget back within the idle timeout", async () => {
    await sinceProbes(36_000);
    // Each was answered "no-such-port" and ended by the sidecar; the peer just never closed its side.
    expect(heldRefused.map((p) => [...p.bytes])).toEqual(heldRefused.map(() => [1]));
    const p = await tracked(gateway.ports.inbound, { tls: clientTls(fx, "orders") });
    p.write(Buffer.concat([preamble(echo.port), framed("legit")]));
    const served = await p.until((q) => unframe(q.bytes.subarray(1)).payload.endsWith("legit") || q.closed, 3000);
    const result = { served, answer: p.bytes[0], text: unframe(p.bytes.subarray(1)).payload };
    for (const q of heldRefused) q.terminate();
    p.terminate();
    expect(result).toEqual({ served: true, answer: 0, text: "legit" });
  }, 45_000);

  test("the callee's drain ends an open carried connection in order (FIN both ways), and the sidecar exits 0", async () => {
    const p = await tracked(vault.ports.inbound, { tls: clientTls(fx, "orders") });
    p.write(Buffer.concat([preamble(vaultSvc.port), framed("open")]));
    expect(await p.until((q) => unframe(q.bytes.subarray(1)).payload.endsWith("open"), 5000)).toBe(true);
    vault.proc.kill("SIGTERM");
    const code = await Promise.race([vault.proc.exited, Bun.sleep(10_000).then(() => "still running")]);
    expect(await p.until((q) => q.closed || q.ended, 3000)).toBe(true);
    const svc = vaultSvc.conns[0]!;
    expect({ code, peerEnded: p.ended, endFrame: unframe(p.bytes.subarray(1)).ended, peerError: p.error, serviceSawFin: svc.ended }).toEqual({ code: 0, peerEnded: true, endFrame: true, peerError: undefined, serviceSawFin: true });
  }, 20_000);

  test("every carried connection is gone from the gauges and counted once: mesh_tcp_connections_open is 0 on every sidecar", async () => {
    const open = async (s: Sidecar, direction: string) => metricValue(s.ports.admin, "mesh_tcp_connections_open", { direction });
    // orders2 and victim were killed above.
    const zero = async () => (await open(orders, "outbound")) === 0 && (await open(db, "inbound")) === 0 && (await open(gateway, "inbound")) === 0;
    await eventually(zero, 5000);
    expect({ orders: await open(orders, "outbound"), db: await open(db, "inbound"), gateway: await open(gateway, "inbound") }).toEqual({ orders: 0, db: 0, gateway: 0 });
    const dump = await (await fetch(`http://127.0.0.1:${orders.ports.admin}/config_dump`)).json();
    const inflight = (dump.destinations as { name: string; endpoints: { inflight: number }[] }[]).flatMap((d) => d.endpoints.map((e) => `${d.name}=${e.inflight}`));
    expect(inflight.filter((e) => !e.endsWith("=0"))).toEqual([]);
  });
});
