/**
 * When a mesh-mux/1 session without streams ends, in both roles, against peers that try to
 * keep it: real TLS on loopback, an in-process inbound listener (idle period 1 s) and an
 * in-process client connector (idle time 1 s). Bun's socket timers tick every few seconds,
 * so each end is awaited for several periods, never timed.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { H1Listener, type ListenerTls } from "../../../src/proxy/transport/h1-server/listener.ts";
import { MuxConnector } from "../../../src/proxy/transport/mux/connector.ts";
import type { MuxStream, StreamHandler } from "../../../src/proxy/transport/mux/stream.ts";
import { makeIntermediate, makeLeaf, makeRoot, pemOf, type Issued } from "../../helpers/certs.ts";
import { alpn, frameHeader, MuxClient, muxServer, T, type MuxServer } from "../../helpers/mux-peer.ts";
import type { ClientTls } from "../../helpers/raw-http.ts";
import { until } from "../../helpers/wait.ts";

const TD = "example.org";
let root: Issued, int: Issued, payments: Issued, orders: Issued;
let ordersTls: ClientTls;
const peers: MuxClient[] = [];

beforeAll(async () => {
  root = await makeRoot({ trustDomain: TD });
  int = await makeIntermediate(root);
  payments = await makeLeaf(int, { uris: [`spiffe://${TD}/ns/default/sa/payments`] });
  orders = await makeLeaf(int, { uris: [`spiffe://${TD}/ns/default/sa/orders`] });
  ordersTls = { cert: pemOf(orders, int), key: orders.keyPem, ca: root.pem };
});
afterAll(() => {
  for (const p of peers.splice(0)) p.terminate();
});

describe("server role: a session with no stream closes after a period, whatever else the peer sends", () => {
  let listener: H1Listener;
  let port = 0;

  beforeAll(() => {
    const tls: ListenerTls = { cert: pemOf(payments, int), key: payments.keyPem, ca: root.pem, trustDomain: TD, notAfterMs: payments.cert.notAfter.getTime() };
    listener = new H1Listener({
      hostname: "127.0.0.1",
      port: 0,
      tls,
      limits: { maxBodyBytes: 1 << 20, idleTimeoutS: 1 },
      events: { onRefused: () => {}, onOpen: () => {} },
      handler: { refused: () => {}, upgrade: () => {}, request: (req, res) => res.respond(200, {}, `hi ${req.head.pathAndQuery}`) },
    });
    port = listener.listen();
  });
  afterAll(() => listener?.closeAll());

  async function sessionWithOneAnsweredRequest(): Promise<MuxClient> {
    const c = await MuxClient.open(port, ordersTls);
    peers.push(c);
    expect(c.alpnProtocol).toBe("mesh-mux/1");
    c.get(1, "/first");
    expect((await c.response(1))?.status).toBe(200);
    // The client's FIN ends stream 1 (the server's FIN came with its answer).
    c.raw(frameHeader(T.FIN, 1, 0));
    return c;
  }

  // A WINDOW on a stream that is gone is allowed (it may have crossed the stream's end) and
  // ignored; sent every 300 ms, it must not count as the session being in use, or a peer
  // holds its place among the listener's connections for good at no cost. A quiet session
  // beside it is the control: both close within a few of Bun's timer ticks.
  test("a WINDOW on a closed stream every 300 ms does not keep it open, any more than silence does", async () => {
    const [quiet, noisy] = await Promise.all([sessionWithOneAnsweredRequest(), sessionWithOneAnsweredRequest()]);
    const noise = setInterval(() => noisy.closed || noisy.raw(frameHeader(T.WINDOW, 1, 1)), 300);
    try {
      const closed = await Promise.all([until(() => quiet.closed, 15_000), until(() => noisy.closed, 15_000)]);
      expect({ quiet: closed[0], noisy: closed[1] }).toEqual({ quiet: true, noisy: true });
    } finally {
      clearInterval(noise);
    }
  }, 20_000);
});

describe("client role: a closing session whose server reads nothing is dropped", () => {
  let server: MuxServer<true>;
  let connector: MuxConnector;
  const STREAMS = 128;

  beforeAll(() => {
    const tls = { cert: pemOf(payments, int), key: payments.keyPem, ca: root.pem, requestCert: true, rejectUnauthorized: true, ALPNProtocols: alpn("mesh-mux/1") };
    // Takes each connection, then reads nothing from it: what the client sends piles up.
    server = muxServer<true>(tls, { open: () => true, data: () => {} });
    connector = new MuxConnector({
      host: "127.0.0.1",
      port: server.port,
      tls: { cert: pemOf(orders, int), key: orders.keyPem, ca: root.pem, verifyPeer: () => undefined },
      connectTimeoutMs: 5000,
      idleTimeoutMs: 1000,
      onHandshake: () => {},
    });
  });
  afterAll(() => {
    connector?.close();
    server?.listener.stop(true);
  });

  test("once its streams are reset, it is closed, and then dropped a period later", async () => {
    const quiet: StreamHandler = { idle: true, onData() {}, onDrain() {}, onClose() {}, onTimeout() {} };
    const streams: MuxStream[] = [];
    for (let i = 0; i < STREAMS; i++) streams.push((await connector.open(quiet))!);
    expect(await until(() => server.conns.length === 1, 5000)).toBe(true);
    const conn = server.conns[0]!;
    conn.sock.pause();
    // Each stream writes its whole window (128 KiB) as the session has room: up to 16 MiB,
    // more than loopback's socket buffers take, so the session's own output stays queued.
    const window = Buffer.alloc(128 * 1024, 0x61);
    const sent = streams.map(() => 0);
    let total = 0;
    let still = 0;
    for (let round = 0; round < 500 && still < 10; round++) {
      const before = total;
      streams.forEach((s, i) => {
        const n = s.write(window, sent[i]!, window.byteLength - sent[i]!);
        if (n > 0) ((sent[i]! += n), (total += n));
      });
      still = total === before ? still + 1 : 0;
      await Bun.sleep(20);
    }
    console.log(`written before the socket stalled: ${(total / 2 ** 20).toFixed(1)} MiB`);
    const session = streams[0]!.session;
    expect((session as unknown as { writer: { queued: number } }).writer.queued).toBeGreaterThan(0);
    for (const s of streams) s.terminate();
    // Empty, it is closed after the connector's idle time (1 s), and cannot finish: its
    // output never goes out. It must be dropped, not held for as long as the server likes.
    const dropped = await until(() => conn.gone, 15_000);
    console.log(`client session with queued output against a server that reads nothing: dropped ${dropped}`);
    expect(dropped).toBe(true);
    expect(session.closed).toBe(true);
    // The connector holds it no more: a new stream gets a new session.
    const next = await connector.open(quiet);
    expect(next?.session).not.toBe(session);
    expect(await until(() => server.conns.length === 2, 5000)).toBe(true);
    next?.terminate();
  }, 25_000);
});
