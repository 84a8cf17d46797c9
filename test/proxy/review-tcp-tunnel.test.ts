/**
 * Attacker's review of the sidecar's opaque TCP path (src/proxy/tcp: mesh-tcp/1 between
 * sidecars, its frames, the pipe, the local listeners, the inbound's hand-over) and of the
 * multiplexed tunnel between sidecars (src/proxy/transport/mux, byte-socket.ts,
 * write-queue.ts).
 *
 * Topology (all on 127.0.0.1; real `mesh proxy` processes started from source, certificates
 * from a test CA):
 *
 *   app ──plain──> orders' sidecar (--tcp-upstream db:*, vault:*, twin:5432, capped:5432)
 *                     ├──mTLS mesh-tcp/1──> db's sidecar ──> TCP services: echo, counter (counts
 *                     │                        │             reads), recorder, firehose, streamer, closer
 *                     │                        └──> its --upstream: a raw HTTP/1.1 server counting reads
 *                     ├──mTLS mesh-tcp/1──> vault's sidecar ──> echo, echo   (its --config edited live)
 *                     ├──capped: db behind circuitBreaker.maxConnections 2
 *                     └──twin (identity db): endpoints [impostor holding gateway's VALID certificate, db]
 *   raw peers ──TLS (gateway's / web's valid certificates, an expired one, none, plain TCP)──> db's
 *                inbound, speaking mesh-tcp/1 or mesh-mux/1 by hand, well and badly.
 *
 * Attacked, and what must hold:
 *  (a) as a peer holding a valid certificate of another service: mesh-tcp/1 frames no version
 *      knows, DATA after END, a frame declaring 16 MiB that never completes, a FIN without END:
 *      the service must see a reset, never a clean end, and no byte after the break; a declared
 *      16 MiB frame is passed on as it arrives (nothing held). mesh-mux/1 frames outside the
 *      protocol (unknown type, DATA > 64 KiB or "negative" 2^32-1, empty DATA, flags, GOAWAY
 *      from a client, a frame on stream 0, window overflow) end the session and the proxy
 *      serves on; 2,000 streams opened (ids out of order too) and never read: 128 taken, the
 *      rest refused, memory bounded. Tiny frames: a read must not become one send() per frame.
 *  (b) as a misbehaving application or service: a reader that never reads while the other
 *      side writes as fast as it can (backpressure to the writer, both sidecars bounded); the
 *      application's FIN while 4 MiB flow back; FIN both ways at once.
 *  (c) identity and authorization: each tunnel's peer SPIFFE ID is checked (an endpoint with
 *      another service's valid certificate is dialled and refused on every connection, never
 *      sent a byte); a caller outside the mesh reaches nothing; a caller whose certificate has
 *      expired; a caller denied, or a port withdrawn, by a config reload while its connection is
 *      open (HTTP over an open mux stream is re-checked per request: the control test);
 *      maxConnections across a certificate renewal.
 *  Cleanup: after 110 connections ended every way (clean, reset by either side, refused,
 *  denied, malformed, cut, handshake only) every descriptor comes back (/proc/PID/fd), the
 *  gauges return to 0 and each connection is counted once; a peer that never closes after both
 *  ENDs does not pin its place (Bun lets the TLS socket go ~12 s after its end()).
 *
 * Judged acceptable (notes; the behaviours that pass are tested):
 *  - A local listener (--tcp-upstream) carries any local process under the sidecar's identity,
 *    as the outbound HTTP listener does: that is the sidecar model (bind it to loopback).
 *  - The inbound bounds carried connections by --max-connections only (circuitBreaker is the
 *    caller's); each one's connect to the service takes a place in the upstream budget.
 *  - Idle time counts reads only; Envoy counts writes too, but a pipe queues at most one read.
 *  - A local connect that times out keeps its descriptor until the kernel gives up on the SYN
 *    (Bun cannot cancel a pending connect); only a stalled service causes it.
 *  - TLS 1.2 session resumption itself (the session keeps the identity it proved); the fault
 *    is that its certificate's validity is not checked again (6 below).
 *
 * Faults found, each fixed; their tests keep names that state what now holds:
 *  1. mesh-tcp/1, tiny frames: 400 KB sent as 1-byte DATA frames (2 MB on the wire) reach the
 *     service in 40,000-270,000 reads (one send() and one TCP segment per frame; ~2 s of the
 *     callee sidecar's CPU), where 64 KiB frames take 4 reads. TcpPipe.payload writes each
 *     frame's payload as FrameReader hands it over.
 *     Fixed (tcp/frames.ts): payloads under 1 KiB that come several to a read are gathered
 *     and handed on once.
 *  2. mesh-mux/1, tiny frames: a 100 KB request body in 1-byte DATA frames reaches the local
 *     service in 13,000-43,000 reads (MuxSession.onData hands each frame to the stream alone).
 *     Fixed (transport/mux/session.ts): a stream's small pieces of one read are gathered in
 *     the slab they were copied into anyway, and handed on once.
 *  3. An AuthorizationPolicy that comes to deny a caller leaves its open carried connections
 *     carrying bytes (default tcpIdle 1 h, no longest life): InboundTcpConnection.decide() is
 *     the only check. HTTP on an open mux stream is re-checked per request.
 *     Fixed: at every config change (proxy.ts applyConfig/useStatic → SidecarTcp.recheckOpen)
 *     each open inbound connection is checked again (InboundTcpConnection.recheck, decide()'s
 *     port and policy check) and one now refused is reset both ways (CarriedConnection.revoke),
 *     counted and logged "denied"; test/proxy/tcp-revoked.test.ts tests it without probes.
 *  4. A tcp port withdrawn from the callee's Service stays reachable over connections open to it.
 *     Fixed: the same pass resets them, counted and logged "no-such-port".
 *  5. circuitBreaker.maxConnections: 2 lets 4 connections be open at once after the caller's
 *     certificate is renewed: buildSnapshot rebuilds every destination on a certificate change
 *     (reusable() compares certs), with a fresh CircuitBreaker that does not count the open ones.
 *     Fixed (destinations.ts): a renewal keeps the destination's breaker, endpoints, outlier
 *     state, budget and balancer, with new pools (withCerts); a changed service or policy
 *     rebuilds it with a breaker that shares the old one's counts (CircuitBreaker.continuing)
 *     and the same Endpoint objects (in-flight counts). HTTP's maxRequests and in-flight counts
 *     had the same fault: test/proxy/breaker-across-rebuild.test.ts.
 *  6. A caller whose certificate expired resumes a TLS 1.2 session made while it was valid,
 *     sends no certificate, and is carried: the answer is CONNECTED, a connection is opened to
 *     the service and the first bytes ("FLUSHALL\r\n") reach it before the expiry watch cuts
 *     the connection ~10 ms later. The inbound's handshake() takes the session's leaf without
 *     checking its validity (peerIdFromDer checks none; only the full handshake's chain check did).
 *     Fixed (peer-identity.ts): peerIdFromDer refuses a leaf outside its validity at the
 *     handshake, for every listener and the outbound's server check.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Socket } from "bun";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import nodeTls from "node:tls";
import { X509Certificate } from "node:crypto";
import { mesh } from "../helpers/cli.ts";
import { clientTls, rssMiB } from "../helpers/data-plane.ts";
import { fixtureFor, metricValue } from "../helpers/mesh-fixture.ts";
import type { ClientTls } from "../helpers/raw-http.ts";
import { connectRawPeer, type RawPeer } from "../helpers/raw-peer.ts";
import { tcpEchoService, tcpExchange, type TcpService } from "../helpers/tcp.ts";
import { tcpRecorder, type RecordedConn, type TcpRecorder } from "../helpers/tcp-recorder.ts";
import { eventually } from "../helpers/wait.ts";
import { dataFrames, END_FRAME, FrameReader } from "../../src/proxy/tcp/frames.ts";

const fx = fixtureFor("orders", "db", "vault", "web", "gateway");
type Sidecar = Awaited<ReturnType<typeof fx.proxy>>;

// ---------------------------------------------------------------------------------------
// Wire helpers

const alpnWire = (...protocols: string[]) => Buffer.concat(protocols.map((p) => Buffer.concat([Buffer.from([p.length]), Buffer.from(p, "latin1")])));
const MESH_TCP = alpnWire("mesh-tcp/1");
const MESH_MUX = alpnWire("mesh-mux/1");
const preamble = (port: number) => Buffer.from([port >> 8, port & 0xff]);
/** Bytes as a sidecar frames them (frames.ts). */
const framed = (data: string | Uint8Array) => Buffer.from(dataFrames(typeof data === "string" ? Buffer.from(data, "latin1") : data));
const END = Buffer.from(END_FRAME);
/** A raw mesh-tcp/1 frame header: type, 24-bit length. */
const tcpHeader = (type: number, length: number) => Buffer.from([type, (length >>> 16) & 0xff, (length >>> 8) & 0xff, length & 0xff]);
/** `data` as DATA frames of `size` payload bytes each. */
function tinyFrames(data: Buffer, size: number): Buffer {
  const parts: Buffer[] = [];
  for (let at = 0; at < data.byteLength; at += size) parts.push(framed(data.subarray(at, Math.min(data.byteLength, at + size))));
  return Buffer.concat(parts);
}
function unframe(bytes: Buffer): { payload: string; ended: boolean; malformed: boolean } {
  const parts: Buffer[] = [];
  const r = { ended: false, malformed: false };
  new FrameReader({ data: (chunk, start, end) => void parts.push(Buffer.from(chunk.subarray(start, end))), end: () => void (r.ended = true), malformed: () => void (r.malformed = true) }).push(bytes);
  return { payload: Buffer.concat(parts).toString("latin1"), ...r };
}
/** A mesh-mux/1 frame (transport/mux/frame.ts): type, flags, stream id, value, payload. */
function muxFrame(type: number, id: number, value: number, payload?: Uint8Array, flags = 0): Buffer {
  const h = Buffer.alloc(10);
  h[0] = type;
  h[1] = flags;
  h.writeUInt32BE(id, 2);
  h.writeUInt32BE(value >>> 0, 6);
  return payload ? Buffer.concat([h, payload]) : h;
}

// ---------------------------------------------------------------------------------------
// Raw clients (raw-peer.ts): plain TCP to a local listener, or TLS with a mesh certificate to an inbound.

const peers: RawPeer[] = [];
/** A peer closed at the end of the file whatever happens; its bulk writes retry within 2 ms (as fast as the socket takes them). */
async function connectPeer(port: number, tls?: Partial<ClientTls>, alpn: Buffer = MESH_TCP): Promise<RawPeer> {
  const p = await connectRawPeer(port, { tls, alpn, writeRetryMs: 2 });
  peers.push(p);
  return p;
}

// ---------------------------------------------------------------------------------------
// Services (the recorders: tcp-recorder.ts)

const BLOCK = Buffer.alloc(256 * 1024, 0x66);
/** Writes `total` bytes to the socket as fast as it takes them (call again on drain), then `after` once. */
function pump(s: Socket<RecordedConn>, total: number, state: { written: number; done?: boolean }, after?: () => void): void {
  while (state.written < total) {
    const want = Math.min(BLOCK.byteLength, total - state.written);
    const n = s.write(BLOCK.subarray(0, want));
    if (n > 0) state.written += n;
    if (n < want) return;
  }
  if (after === undefined || state.done) return;
  state.done = true;
  after();
}

/**
 * db's --upstream: a raw HTTP/1.1 server that answers each request once its body is in, and
 * counts the reads its body took (per request). Heads are small; bodies are only counted.
 */
function countingHttp() {
  type St = { head: string; need: number; reads: number };
  const bodies: { reads: number }[] = [];
  const listener = Bun.listen<St>({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      open: (s) => void (s.data = { head: "", need: -1, reads: 0 }),
      data(s, chunk) {
        const st = s.data;
        let at = 0;
        while (at < chunk.byteLength) {
          if (st.need < 0) {
            st.head += chunk.subarray(at).toString("latin1");
            const end = st.head.indexOf("\r\n\r\n");
            if (end < 0) return;
            const rest = st.head.length - (end + 4);
            at = chunk.byteLength - rest;
            st.need = Number(/content-length:\s*(\d+)/i.exec(st.head.slice(0, end))?.[1] ?? 0);
            st.head = "";
            st.reads = 0;
          }
          const n = Math.min(st.need, chunk.byteLength - at);
          if (n > 0) st.reads++;
          st.need -= n;
          at += n;
          if (st.need === 0) {
            bodies.push({ reads: st.reads });
            st.need = -1;
            s.write("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
          }
        }
      },
    },
  });
  return { url: `http://127.0.0.1:${listener.port}`, bodies, stop: () => listener.stop(true) };
}

/** A TLS server holding `tls` (a valid mesh certificate) that offers mesh-tcp/1 and records what reaches it. */
function impostor(tls: ClientTls) {
  const st = { accepted: 0, handshakes: 0, bytes: 0 };
  const listener = Bun.listen<undefined>({
    hostname: "127.0.0.1",
    port: 0,
    tls: { cert: tls.cert, key: tls.key, ca: tls.ca, ALPNProtocols: MESH_TCP },
    socket: {
      open: () => void st.accepted++,
      handshake: () => void st.handshakes++,
      data: (_s, d) => void (st.bytes += d.byteLength),
      error() {},
      close() {},
    },
  });
  return { port: listener.port, st, stop: () => listener.stop(true) };
}

/**
 * A TLS 1.2 client (node:tls, which can resume a session): connects with `opts` (a
 * certificate, or only a session to resume), writes `input`, and reports after `holdMs`
 * what came back and the session it may resume with next time.
 */
function tls12Exchange(port: number, opts: nodeTls.ConnectionOptions, input: Buffer, holdMs: number) {
  return new Promise<{ got: Buffer; session: Buffer | undefined; error: string | undefined }>((resolve) => {
    const chunks: Buffer[] = [];
    let session: Buffer | undefined;
    let error: string | undefined;
    const sock = nodeTls.connect(
      { host: "127.0.0.1", port, maxVersion: "TLSv1.2", ALPNProtocols: ["mesh-tcp/1"], rejectUnauthorized: false, checkServerIdentity: () => undefined, ...opts },
      () => void sock.write(input),
    );
    sock.on("session", (s) => (session = s));
    sock.on("data", (d: Buffer) => void chunks.push(d));
    sock.on("error", (e) => (error ??= e.message));
    setTimeout(() => {
      session ??= sock.getSession();
      sock.destroy();
      resolve({ got: Buffer.concat(chunks), session, error });
    }, holdMs);
  });
}

// ---------------------------------------------------------------------------------------
// The mesh

const doc = (kind: string, name: string, spec: string) => `---\napiVersion: mesh.dev/v1alpha1\nkind: ${kind}\nmetadata:\n  name: ${name}\nspec:\n${spec}`;
const tcpPort = (name: string, port: number, target: number) => `    - {name: ${name}, port: ${port}, protocol: tcp, targetPort: ${target}}\n`;
const endpoints = (...ports: number[]) => `  endpoints:\n${ports.map((p) => `    - {address: 127.0.0.1, port: ${p}}\n`).join("")}`;
const allow = (service: string, ...who: string[]) => doc("AuthorizationPolicy", `allow-${service}`, `  service: ${service}\n  action: allow\n  rules:\n    - from: { services: [${who.join(", ")}] }\n`);
const write = (name: string, text: string) => {
  const path = join(fx.tmp.path, `${name}.yaml`);
  writeFileSync(path, text);
  return path;
};
const fdCount = (pid: number) => readdirSync(`/proc/${pid}/fd`).length;
/** User+system CPU time of a process, ms. */
function cpuMs(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return (Number(f[11]) + Number(f[12])) * 10;
}

let echo: TcpService;
let vaultEcho: TcpService;
let vaultExtra: TcpService;
let counter: TcpRecorder;
let watch: TcpRecorder;
let fire: TcpRecorder;
const fired: { written: number; done?: boolean } = { written: 0 };
let streamer: TcpRecorder;
const streamed: { written: number; done?: boolean } = { written: 0 };
let closer: TcpRecorder;
let http: ReturnType<typeof countingHttp>;
let fake: ReturnType<typeof impostor>;
let db: Sidecar;
let vault: Sidecar;
let orders: Sidecar;
let vaultFile: string;
let lingering: RawPeer;
let shortLived: { ca: string; notAfter: number; session?: Buffer; firstAnswer?: number };
let lingeringAt = 0;
let vaultPorts: string;
const local: Record<string, number> = {};
const UPSTREAMS = ["db:5432", "db:5444", "db:5445", "db:5446", "db:5447", "vault:5432", "vault:5433", "twin:5432", "capped:5432"];
const STREAM_BYTES = 4 * 1024 * 1024;
/** How much the streamer had written when the client's FIN reached it. */
let streamFinAt = -1;

beforeAll(async () => {
  echo = tcpEchoService();
  vaultEcho = tcpEchoService();
  vaultExtra = tcpEchoService();
  counter = tcpRecorder({}, { keepText: false });
  watch = tcpRecorder({ data: (c, chunk) => void c.sock.write(chunk) });
  // Writes as fast as the connection takes it, up to 256 MiB.
  const FIRE = 256 * 1024 * 1024;
  fire = tcpRecorder({ open: (c) => pump(c.sock, FIRE, fired), drain: (c) => pump(c.sock, FIRE, fired) }, { keepText: false });
  // 4 MiB at 128 KiB per 10 ms (still writing ~300 ms after the client's FIN came), then its own FIN.
  const allowance = new Map<RecordedConn, number>();
  const streamOut = (c: RecordedConn) => {
    const upTo = allowance.get(c) ?? 0;
    if (!c.closed) pump(c.sock, upTo, streamed, upTo === STREAM_BYTES ? () => c.sock.end() : undefined);
  };
  streamer = tcpRecorder({
    open(c) {
      allowance.set(c, 0);
      const tick = setInterval(() => {
        const upTo = Math.min(STREAM_BYTES, allowance.get(c)! + 128 * 1024);
        allowance.set(c, upTo);
        if (upTo === STREAM_BYTES || c.closed) clearInterval(tick);
        streamOut(c);
      }, 10);
    },
    drain: streamOut,
    end: () => void (streamFinAt = streamed.written),
  }, { keepText: false });
  // Speaks and half-closes at once; ends when the client's FIN comes.
  closer = tcpRecorder({ open: (c) => void (c.sock.write("S"), c.sock.shutdown()) });
  http = countingHttp();
  fake = impostor(clientTls(fx, "gateway"));

  const dbPorts =
    `  ports:\n    - {name: http, port: 80}\n` +
    tcpPort("pg", 5432, echo.port) +
    tcpPort("count", 5443, counter.port) +
    tcpPort("watch", 5444, watch.port) +
    tcpPort("fire", 5445, fire.port) +
    tcpPort("stream", 5446, streamer.port) +
    tcpPort("close", 5447, closer.port);
  vaultPorts = `  ports:\n` + tcpPort("pg", 5432, vaultEcho.port) + tcpPort("extra", 5433, vaultExtra.port);
  vaultFile = write("vault", doc("Service", "vault", vaultPorts) + allow("vault", "orders"));
  [db, vault] = await Promise.all([
    fx.proxy("db", http.url, write("db", doc("Service", "db", dbPorts) + allow("db", "orders", "gateway"))),
    fx.proxy("vault", fx.echo("vault-web").url, vaultFile),
  ]);
  const callerView =
    doc("Service", "db", dbPorts + endpoints(db.ports.inbound)) +
    doc("Service", "vault", vaultPorts + endpoints(vault.ports.inbound)) +
    // db again, under another name, with an endpoint that holds gateway's valid certificate first.
    doc("Service", "twin", `  identity: db\n  ports:\n${tcpPort("pg", 5432, echo.port)}${endpoints(fake.port, db.ports.inbound)}`) +
    // db again, behind a breaker of two connections.
    doc("Service", "capped", `  identity: db\n  ports:\n${tcpPort("pg", 5432, echo.port)}${endpoints(db.ports.inbound)}`) +
    doc("DestinationPolicy", "capped", "  service: capped\n  circuitBreaker: {maxConnections: 2}\n") +
    doc("DestinationPolicy", "twin", "  service: twin\n  loadBalancer: {type: round-robin}\n  retries: {attempts: 3}\n  outlierDetection: {consecutiveFailures: 1000}\n");
  orders = await fx.proxy("orders", fx.echo("orders-web").url, write("orders", callerView), UPSTREAMS.flatMap((u) => ["--tcp-upstream", `${u}=127.0.0.1:0`]));
  const ports = (orders.ready as { tcp: number[] }).tcp;
  UPSTREAMS.forEach((u, i) => (local[u] = ports[i]!));
  // gateway's certificate with a 5 s life: a full TLS 1.2 handshake while it is valid leaves a session to resume.
  const shortDir = join(fx.tmp.path, "certs", "gateway-short");
  const issued = await mesh("ca", "issue", "--service", "gateway", "--ca-dir", fx.ca, "--out", shortDir, "--force", "--ttl", "5s");
  if (issued.code !== 0) throw new Error(issued.err);
  const short = { cert: readFileSync(join(shortDir, "chain.pem"), "utf8"), key: readFileSync(join(shortDir, "key.pem"), "utf8"), ca: readFileSync(join(shortDir, "bundle.pem"), "utf8") };
  shortLived = { ca: short.ca, notAfter: Date.parse(new X509Certificate(short.cert).validTo) };
  const full = await tls12Exchange(db.ports.inbound, short, Buffer.concat([preamble(echo.port), framed("valid")]), 300);
  shortLived.session = full.session;
  shortLived.firstAnswer = full.got[0];
  // A slow probe, judged by the last tests: a peer that never closes its side after both ENDs.
  lingering = await gatewayPeer();
  lingering.write(Buffer.concat([preamble(echo.port), framed("hello"), END]));
  lingeringAt = Date.now();
  await lingering.until((q) => unframe(q.bytes.subarray(1)).ended, 5000);
}, 60_000);

afterAll(() => {
  for (const p of peers) p.terminate();
  for (const s of [echo, vaultEcho, vaultExtra, counter, watch, fire, streamer, closer, http, fake]) s?.stop();
});

const tcpTotal = (side: Sidecar, labels: Record<string, string>) => metricValue(side.ports.admin, "mesh_tcp_connections_total", labels);
const openGauge = (side: Sidecar, direction: string) => metricValue(side.ports.admin, "mesh_tcp_connections_open", { direction });
const app = (upstream: string) => connectPeer(local[upstream]!);
const gatewayPeer = (alpn: Buffer = MESH_TCP) => connectPeer(db.ports.inbound, clientTls(fx, "gateway"), alpn);

// ---------------------------------------------------------------------------------------

describe("(a) a mesh peer breaking mesh-tcp/1's frames on db's inbound", () => {
  /** A joined connection to `watch` with `hello` echoed, then `bad` written: how the service's side ended. */
  async function breakAfterHello(bad: Buffer) {
    const n = watch.conns.length;
    const p = await gatewayPeer();
    p.write(Buffer.concat([preamble(watch.port), framed("hello")]));
    const echoed = await p.until((q) => unframe(q.bytes.subarray(1)).payload === "hello", 5000);
    p.write(bad);
    await eventually(() => watch.conns[n]?.closed === true, 5000);
    await p.until((q) => q.closed, 3000);
    const c = watch.conns[n];
    const r = { echoed, serviceGot: c?.text, serviceClosed: c?.closed, serviceCleanFin: c?.ended === true && c.error === undefined, peerReset: p.closed && !p.ended };
    p.terminate();
    return r;
  }

  test("a frame type no version knows, mid-stream: the service sees a reset (never a clean end), the peer is cut, counted malformed", async () => {
    const before = await tcpTotal(db, { direction: "inbound", peer: "gateway", result: "malformed" });
    const r = await breakAfterHello(Buffer.concat([tcpHeader(7, 3), Buffer.from("abc")]));
    expect(r).toEqual({ echoed: true, serviceGot: "hello", serviceClosed: true, serviceCleanFin: false, peerReset: true });
    expect(await eventually(async () => (await tcpTotal(db, { direction: "inbound", peer: "gateway", result: "malformed" })) === before + 1, 3000)).toBe(true);
  }, 15_000);

  test("DATA after END: the bytes before END arrive and END's FIN with them, the smuggled bytes never do; the peer is cut", async () => {
    const r = await breakAfterHello(Buffer.concat([END, framed("smuggled")]));
    // END is a legitimate end of the caller's direction: the service may see its FIN cleanly.
    expect({ echoed: r.echoed, serviceGot: r.serviceGot, peerReset: r.peerReset }).toEqual({ echoed: true, serviceGot: "hello", peerReset: true });
  }, 15_000);

  test("a frame declaring 16 MiB is passed on as it arrives (1 MiB of it reaches the service, nothing held); a FIN inside it is a cut, passed on as a reset", async () => {
    const n = counter.conns.length;
    const rss = rssMiB(db.proc.pid);
    const p = await gatewayPeer();
    p.write(Buffer.concat([preamble(counter.port), tcpHeader(0, 0xffffff)]));
    expect(await p.writeAll(Buffer.alloc(1024 * 1024, 0x41))).toBe(1024 * 1024);
    const passed = await eventually(() => (counter.conns[n]?.bytes ?? 0) === 1024 * 1024, 5000);
    const growth = rssMiB(db.proc.pid) - rss;
    p.sock.shutdown();
    await eventually(() => counter.conns[n]?.closed === true, 5000);
    const c = counter.conns[n]!;
    p.terminate();
    expect({ passed, cleanEnd: c.ended && c.error === undefined, closed: c.closed }).toEqual({ passed: true, cleanEnd: false, closed: true });
    expect(growth).toBeLessThan(48);
  }, 15_000);

  test("1-byte DATA frames of one read are written to the service together: 400 KB arrive in under 2,000 reads", async () => {
    const n = counter.conns.length;
    const N = 400_000;
    const p = await gatewayPeer();
    const cpu = cpuMs(db.proc.pid);
    // 2 MB on the wire, written in large chunks: the sidecar reads it a TLS record (16 KiB) or more at a time.
    expect(await p.writeAll(Buffer.concat([preamble(counter.port), tinyFrames(Buffer.alloc(N, 0x61), 1), END]), 30_000)).toBe(N * 5 + 6);
    expect(await eventually(() => (counter.conns[n]?.bytes ?? 0) === N, 30_000)).toBe(true);
    const r = { serviceReads: counter.conns[n]!.reads, sidecarCpuMs: cpuMs(db.proc.pid) - cpu };
    p.terminate();
    // What one read of the sidecar's carries should leave in one write (~125 reads of 16 KiB
    // records for 2 MB): not one syscall and one TCP segment per byte the peer framed alone.
    expect({ ...r, coalesced: r.serviceReads < 2_000 }).toMatchObject({ coalesced: true });
  }, 40_000);
});

describe("(a) a mesh peer breaking mesh-mux/1 on db's inbound", () => {
  const GET = (path: string) => Buffer.from(`GET ${path} HTTP/1.1\r\nhost: db\r\n\r\n`);

  test("frames outside the protocol end the whole session at once, and the proxy serves the next one", async () => {
    const violations: Record<string, Buffer> = {
      "unknown frame type": muxFrame(9, 1, 0),
      "DATA longer than 64 KiB": muxFrame(0, 1, 64 * 1024 + 1),
      "DATA of 2^32-1 bytes (-1 as int32)": muxFrame(0, 1, 0xffffffff),
      "an empty DATA": muxFrame(0, 1, 0),
      "non-zero flags": muxFrame(0, 1, 3, Buffer.from("GET"), 0x80),
      "GOAWAY from a client": muxFrame(4, 0, 0),
      "a frame on stream 0": muxFrame(1, 0, 10),
      "WINDOW past 2^31-1": Buffer.concat([muxFrame(0, 1, GET("/w").length, GET("/w")), muxFrame(1, 1, 0x7fffffff)]),
    };
    const seen: Record<string, boolean> = {};
    for (const [name, bytes] of Object.entries(violations)) {
      const p = await gatewayPeer(MESH_MUX);
      p.write(bytes);
      seen[name] = await p.until((q) => q.closed, 5000);
      p.terminate();
    }
    expect(seen).toEqual(Object.fromEntries(Object.keys(violations).map((k) => [k, true])));
    const ok = await gatewayPeer(MESH_MUX);
    ok.write(muxFrame(0, 1, GET("/after").length, GET("/after")));
    expect(await ok.until((q) => q.text.includes("HTTP/1.1 200"), 5000)).toBe(true);
    ok.terminate();
  }, 15_000);

  test("2,000 streams opened and never read: at most 128 are taken, the rest refused, and the sidecar's memory stays bounded", async () => {
    const rss = rssMiB(db.proc.pid);
    const p = await gatewayPeer(MESH_MUX);
    p.sock.pause();
    // Ids out of order too: after 2,000 ascending, a run of lower ids is dropped silently.
    const frames: Buffer[] = [];
    for (let id = 1; id <= 4000; id += 2) frames.push(muxFrame(0, id, 1, Buffer.from("G")));
    for (let id = 2; id <= 400; id += 2) frames.push(muxFrame(0, id, 1, Buffer.from("G")));
    expect(await p.writeAll(Buffer.concat(frames))).toBe(frames.length * 11);
    await Bun.sleep(300);
    const growth = rssMiB(db.proc.pid) - rss;
    p.sock.resume();
    // The answers: RESET 1 (refused) for each stream past 128.
    await p.until((q) => q.bytes.byteLength >= (2000 - 128) * 10, 5000);
    const b = p.bytes;
    let refused = 0;
    for (let at = 0; at + 10 <= b.byteLength; at += 10) if (b[at] === 3 && b.readUInt32BE(at + 6) === 1) refused++;
    p.terminate();
    expect(refused).toBe(2000 - 128);
    expect(growth).toBeLessThan(48);
  }, 15_000);

  test("1-byte DATA frames of a request body reach the local service gathered, not one write each", async () => {
    const N = 100_000; // within one stream window: no WINDOW needed
    const p = await gatewayPeer(MESH_MUX);
    const head = Buffer.from(`POST /upload HTTP/1.1\r\nhost: db\r\ncontent-length: ${N}\r\n\r\n`);
    const frames: Buffer[] = [muxFrame(0, 1, head.byteLength, head)];
    for (let i = 0; i < N; i++) frames.push(muxFrame(0, 1, 1, Buffer.from("b")));
    const before = http.bodies.length;
    expect(await p.writeAll(Buffer.concat(frames), 30_000)).toBe(head.byteLength + 10 + N * 11);
    expect(await p.until((q) => q.text.includes("HTTP/1.1 200"), 30_000)).toBe(true);
    p.terminate();
    const body = http.bodies[before]!;
    expect({ serviceReads: body.reads, coalesced: body.reads < 2_000 }).toMatchObject({ coalesced: true });
  }, 40_000);
});

describe("(b) a misbehaving application or service, through the pair", () => {
  test("an application that never reads while the service writes as fast as it can: backpressure reaches the service, both sidecars' memory stays bounded", async () => {
    const rss = { orders: rssMiB(orders.proc.pid), db: rssMiB(db.proc.pid) };
    const c = (await app("db:5445")).countOnly();
    expect(await c.until((q) => q.received > 0, 5000)).toBe(true);
    c.sock.pause();
    // Bounded: wait until the service's writes stop advancing (or 6 s).
    let last = -1;
    await eventually(async () => {
      const now = fired.written;
      const still = now === last;
      last = now;
      await Bun.sleep(400);
      return still && now > 0;
    }, 6000, 0);
    const r = { written: fired.written, orders: rssMiB(orders.proc.pid) - rss.orders, db: rssMiB(db.proc.pid) - rss.db };
    c.terminate();
    // Kernel buffers on three legs (up to 32 MiB receive each here), never the 256 MiB the service would write unheld.
    expect(r.written).toBeLessThan(160 * 1024 * 1024);
    expect({ ordersBounded: r.orders < 96, dbBounded: r.db < 96 }).toEqual({ ordersBounded: true, dbBounded: true });
    expect(await eventually(() => fire.conns.every((x) => x.closed), 5000)).toBe(true);
  }, 20_000);

  test("the application's FIN right away while the service streams 4 MiB: every byte and the service's FIN arrive, nothing is reset, counted ok both sides", async () => {
    const okOut = await tcpTotal(orders, { direction: "outbound", peer: "db", result: "ok" });
    const okIn = await tcpTotal(db, { direction: "inbound", peer: "orders", result: "ok" });
    streamed.written = 0;
    streamed.done = false;
    streamFinAt = -1;
    const n = streamer.conns.length;
    const c = (await app("db:5446")).countOnly();
    c.sock.shutdown();
    expect(await c.until((q) => q.closed, 15_000)).toBe(true);
    const s = streamer.conns[n]!;
    // The FIN reached the service while it still had most of its 4 MiB to write.
    expect(streamFinAt >= 0 && streamFinAt < STREAM_BYTES / 2).toBe(true);
    // Bun reports a FIN on a socket whose own side is already shut as a close without error, not an end.
    expect({ received: c.received, cleanEnd: c.closed && c.error === undefined, serviceSawFin: s.ended, serviceError: s.error }).toEqual({
      received: STREAM_BYTES, cleanEnd: true, serviceSawFin: true, serviceError: undefined,
    });
    expect(await eventually(async () => (await tcpTotal(orders, { direction: "outbound", peer: "db", result: "ok" })) === okOut + 1 && (await tcpTotal(db, { direction: "inbound", peer: "orders", result: "ok" })) === okIn + 1, 3000)).toBe(true);
  }, 20_000);

  test("FIN both ways at once (each side writes a byte and half-closes): each reads the other's byte and FIN, no reset", async () => {
    const n = closer.conns.length;
    const c = await app("db:5447");
    c.write("A");
    c.sock.shutdown();
    expect(await c.until((q) => q.closed, 5000)).toBe(true);
    expect(await eventually(() => closer.conns[n]?.closed === true, 5000)).toBe(true);
    const s = closer.conns[n]!;
    expect({ appGot: c.text, appCleanEnd: c.closed && c.error === undefined, serviceGot: s.text, serviceCleanEnd: s.error === undefined }).toEqual({ appGot: "S", appCleanEnd: true, serviceGot: "A", serviceCleanEnd: true });
  }, 15_000);
});

describe("(c) identity and authorization over carried TCP", () => {
  test("every tunnel checks its peer: an endpoint holding another service's valid certificate never gets a byte, on any of 12 connections", async () => {
    const results: string[] = [];
    for (let i = 0; i < 12; i++) results.push((await tcpExchange(local["twin:5432"]!, `t${i}`, { timeoutMs: 5000 })).text);
    expect(results).toEqual(results.map((_, i) => `t${i}bye ${String(i).length + 1}`));
    // Round robin over [impostor, db] with retries: the impostor was dialled, and refused in the handshake each time.
    const refusedIdentity = await metricValue(orders.ports.admin, "mesh_tls_failures_total", { direction: "outbound", reason: "peer-identity" });
    expect({ dialled: fake.st.accepted >= 3, refusedEachTime: refusedIdentity === fake.st.accepted, bytesToImpostor: fake.st.bytes }).toEqual({ dialled: true, refusedEachTime: true, bytesToImpostor: 0 });
  }, 15_000);

  test("a caller the policy denies is refused on a new connection: answered, and nothing reaches the service", async () => {
    const accepted = echo.accepted;
    const p = await connectPeer(db.ports.inbound, clientTls(fx, "web"));
    p.write(Buffer.concat([preamble(echo.port), framed("SELECT 1")]));
    expect(await p.until((q) => q.closed || q.ended, 5000)).toBe(true);
    expect([...p.bytes]).toEqual([2]);
    expect(echo.accepted).toBe(accepted);
  }, 15_000);

  test("a caller outside the mesh (plain TCP speaking mesh-tcp/1's preamble and frames to the inbound) reaches nothing", async () => {
    const accepted = echo.accepted;
    const p = await connectPeer(db.ports.inbound);
    p.write(Buffer.concat([preamble(echo.port), framed("SELECT 1"), END]));
    expect(await p.until((q) => q.closed || q.ended, 5000)).toBe(true);
    await Bun.sleep(100);
    expect({ answer: p.bytes.subarray(0, 1).toString("latin1") === "\u0000", accepted: echo.accepted - accepted }).toEqual({ answer: false, accepted: 0 });
    p.terminate();
  }, 15_000);

  test("control, HTTP over an open mesh-mux/1 session: a policy edit that denies the caller applies to the next request on the same stream", async () => {
    const GET = (path: string) => Buffer.from(`GET ${path} HTTP/1.1\r\nhost: vault\r\n\r\n`);
    const s = await connectPeer(vault.ports.inbound, clientTls(fx, "orders"), MESH_MUX);
    s.write(muxFrame(0, 1, GET("/one").length, GET("/one")));
    expect(await s.until((q) => q.text.includes("HTTP/1.1 200"), 5000)).toBe(true);
    writeFileSync(vaultFile, doc("Service", "vault", vaultPorts) + allow("vault", "gateway"));
    expect(await eventually(async () => (await tcpExchange(local["vault:5432"]!, "probe", { timeoutMs: 3000 })).text === "", 15_000, 200)).toBe(true);
    s.write(muxFrame(0, 1, GET("/two").length, GET("/two")));
    expect(await s.until((q) => q.text.includes("HTTP/1.1 403"), 5000)).toBe(true);
    s.terminate();
    writeFileSync(vaultFile, doc("Service", "vault", vaultPorts) + allow("vault", "orders"));
    expect(await eventually(async () => (await tcpExchange(local["vault:5432"]!, "back", { timeoutMs: 3000 })).text === "backbye 4", 15_000, 200)).toBe(true);
  }, 40_000);

  test("a caller whose certificate has expired cannot reach the service by resuming a TLS 1.2 session (no certificate sent): refused in the handshake", async () => {
    // While valid, gateway's 5 s certificate was carried (answer 0) and left a session.
    expect({ carriedWhileValid: shortLived.firstAnswer, session: shortLived.session !== undefined }).toEqual({ carriedWhileValid: 0, session: true });
    const wait = shortLived.notAfter + 1000 - Date.now();
    if (wait > 0) await Bun.sleep(wait);
    const n = counter.conns.length;
    // No certificate at all: only the session, and the bytes of a command.
    const r = await tls12Exchange(db.ports.inbound, { ca: shortLived.ca, session: shortLived.session }, Buffer.concat([preamble(counter.port), framed("FLUSHALL\r\n")]), 1000);
    await Bun.sleep(200);
    const seen = {
      answer: r.got.byteLength > 0 ? r.got[0] : "none",
      serviceConnections: counter.conns.length - n,
      serviceBytes: counter.conns.slice(n).reduce((sum, c) => sum + c.bytes, 0),
    };
    // Refused in the handshake, as a full handshake with that certificate would be: nothing opened at the service.
    expect({ answer: seen.answer, serviceConnections: seen.serviceConnections, serviceBytes: seen.serviceBytes }).toEqual({ answer: "none", serviceConnections: 0, serviceBytes: 0 });
  }, 20_000);

  test("an AuthorizationPolicy that comes to deny a caller resets its open carried connections at the reload (as Envoy drains on an RBAC change)", async () => {
    const c = await app("vault:5432");
    c.write("before;");
    expect(await c.until((q) => q.text === "before;", 5000)).toBe(true);
    const denied = () => tcpTotal(vault, { direction: "inbound", peer: "orders", result: "denied" });
    const deniedBefore = await denied();
    writeFileSync(vaultFile, doc("Service", "vault", vaultPorts) + allow("vault", "gateway"));
    // The edit is in force once a new connection from orders is denied.
    expect(await eventually(async () => {
      await tcpExchange(local["vault:5432"]!, "probe", { timeoutMs: 3000 });
      return (await denied()) > deniedBefore;
    }, 15_000, 200)).toBe(true);
    // The connection opened before: does it still carry bytes to the service?
    c.write("after;");
    await c.until((q) => q.closed || q.text.includes("after;"), 3000);
    const r = { stillCarried: c.text.includes("after;"), closed: c.closed };
    c.terminate();
    writeFileSync(vaultFile, doc("Service", "vault", vaultPorts) + allow("vault", "orders"));
    expect(r).toEqual({ stillCarried: false, closed: true });
  }, 30_000);

  test("a tcp port taken out of the callee's Service is no longer reached over connections already open to it: they are reset at the reload", async () => {
    // The allow policy for orders is back: wait until a new connection is carried.
    expect(await eventually(async () => (await tcpExchange(local["vault:5433"]!, "x", { timeoutMs: 3000 })).text === "xbye 1", 15_000, 200)).toBe(true);
    const c = await app("vault:5433");
    c.write("before;");
    expect(await c.until((q) => q.text === "before;", 5000)).toBe(true);
    const refused = () => tcpTotal(vault, { direction: "inbound", peer: "orders", result: "no-such-port" });
    const refusedBefore = await refused();
    writeFileSync(vaultFile, doc("Service", "vault", `  ports:\n${tcpPort("pg", 5432, vaultEcho.port)}`) + allow("vault", "orders"));
    expect(await eventually(async () => {
      await tcpExchange(local["vault:5433"]!, "probe", { timeoutMs: 3000 });
      return (await refused()) > refusedBefore;
    }, 15_000, 200)).toBe(true);
    c.write("after;");
    await c.until((q) => q.closed || q.text.includes("after;"), 3000);
    const r = { stillCarried: c.text.includes("after;"), closed: c.closed };
    c.terminate();
    expect(r).toEqual({ stillCarried: false, closed: true });
  }, 30_000);
});

describe("connection limits across a reload", () => {
  test("circuitBreaker.maxConnections still bounds carried connections after the caller's certificate is renewed", async () => {
    const held: RawPeer[] = [];
    for (let i = 0; i < 2; i++) {
      const c = await app("capped:5432");
      c.write(`c${i}`);
      expect(await c.until((q) => q.text === `c${i}`, 5000)).toBe(true);
      held.push(c);
    }
    const third = await tcpExchange(local["capped:5432"]!, "third", { timeoutMs: 3000 });
    expect(third.text).toBe("");
    // A renewal, as a control plane makes at half life (here: the files re-issued with another lifetime).
    const expiry = await metricValue(orders.ports.admin, "mesh_certificate_expiry_seconds");
    const r = await mesh("ca", "issue", "--service", "orders", "--ca-dir", fx.ca, "--out", join(fx.tmp.path, "certs", "orders"), "--force", "--ttl", "12h");
    expect(r.code).toBe(0);
    expect(await eventually(async () => (await metricValue(orders.ports.admin, "mesh_certificate_expiry_seconds")) !== expiry, 10_000, 100)).toBe(true);
    // Two connections are still open: a third and a fourth must be refused.
    const more = [await app("capped:5432"), await app("capped:5432")];
    more.forEach((c, i) => c.write(`m${i}`));
    await Promise.all(more.map((c) => c.until((q) => q.closed || q.text.length > 0, 3000)));
    const carried = more.filter((c) => c.text.length > 0).length;
    for (const c of [...held, ...more]) c.terminate();
    expect({ openAtOnce: held.length + carried }).toEqual({ openAtOnce: 2 });
  }, 30_000);
});

describe("cleanup after resets, refusals and broken streams", () => {
  test("a peer that never closes after both ENDs does not pin its place: the sidecar lets its side go (~12 s, Bun's TLS close), the gauge returns to 0", async () => {
    // Opened in beforeAll: it had "hellobye 5" and the END, and has kept its side open since, reading nothing more.
    expect(unframe(lingering.bytes.subarray(1))).toEqual({ payload: "hellobye 5", ended: true, malformed: false });
    const wait = lingeringAt + 25_000 - Date.now();
    expect(await eventually(async () => (await openGauge(db, "inbound")) === 0, Math.max(wait, 1000), 200)).toBe(true);
    expect(lingering.closed).toBe(false);
    lingering.terminate();
  }, 30_000);

  test("after 110 connections ended every way (clean, reset by either side, refused, denied, malformed, cut, handshake only), every descriptor comes back and each is counted once", async () => {
    // The admin connection the metric reads keep alive is opened first, so it is in both counts.
    const totalIn = async () => tcpTotal(db, { direction: "inbound" });
    const totalOut = async () => tcpTotal(orders, { direction: "outbound" });
    await eventually(async () => (await openGauge(db, "inbound")) === 0 && (await openGauge(orders, "outbound")) === 0, 5000);
    const counted = { in: await totalIn(), out: await totalOut() };
    await Bun.sleep(200);
    const before = { db: fdCount(db.proc.pid), orders: fdCount(orders.proc.pid), echoOpen: echo.open };
    let viaOrders = 0;
    let viaPeers = 0;
    for (let i = 0; i < 20; i++, viaOrders++) {
      const c = await app("db:5432");
      c.write("abc");
      await c.until((q) => q.text === "abc", 3000);
      c.sock.shutdown();
      await c.until((q) => q.closed, 3000);
    }
    for (let i = 0; i < 20; i++, viaOrders++) {
      const c = await app("db:5432");
      c.write("abc");
      await c.until((q) => q.text === "abc", 3000);
      c.terminate();
    }
    for (let i = 0; i < 20; i++, viaOrders++) {
      const c = await app("db:5432");
      c.write("abc");
      c.terminate();
    }
    for (let i = 0; i < 10; i++, viaPeers++) {
      const p = await gatewayPeer();
      p.write(Buffer.concat([preamble(echo.port), framed("x")]));
      p.terminate();
    }
    for (let i = 0; i < 10; i++, viaPeers++) {
      const p = await connectPeer(db.ports.inbound, clientTls(fx, "web"));
      p.write(Buffer.concat([preamble(echo.port), framed("x")]));
      await p.until((q) => q.bytes.byteLength > 0 || q.closed, 3000);
      p.terminate();
    }
    for (let i = 0; i < 10; i++, viaPeers++) {
      const p = await gatewayPeer();
      p.write(Buffer.concat([preamble(echo.port), tcpHeader(9, 1), Buffer.from("A")]));
      await p.until((q) => q.closed, 3000);
      p.terminate();
    }
    for (let i = 0; i < 10; i++, viaPeers++) {
      const p = await gatewayPeer();
      p.write(Buffer.concat([preamble(echo.port), framed("x")]));
      await p.until((q) => q.bytes.byteLength > 1, 3000);
      p.sock.shutdown(); // a FIN without END: cut
      await p.until((q) => q.closed, 3000);
      p.terminate();
    }
    // Handshake only, then reset: never handed to the TCP side, so not counted there.
    for (let i = 0; i < 10; i++) (await gatewayPeer()).terminate();
    const gone = await eventually(async () => (await openGauge(db, "inbound")) === 0 && (await openGauge(orders, "outbound")) === 0 && echo.open === before.echoOpen, 8000);
    let after = { db: 0, orders: 0 };
    await eventually(() => {
      after = { db: fdCount(db.proc.pid), orders: fdCount(orders.proc.pid) };
      return after.db <= before.db && after.orders <= before.orders;
    }, 5000, 50);
    expect({ gone, db: after.db - before.db, orders: after.orders - before.orders }).toEqual({ gone: true, db: 0, orders: 0 });
    // Each connection the caller's sidecar took is counted once; on the callee, those that reached it plus every raw peer.
    expect(await totalOut()).toBe(counted.out + viaOrders);
    const inbound = (await totalIn()) - counted.in;
    expect(inbound).toBeGreaterThanOrEqual(40 + viaPeers - 10); // a peer reset before its preamble arrived may be counted or not
    expect(inbound).toBeLessThanOrEqual(viaOrders + viaPeers);
  }, 40_000);
});
