/**
 * Review of four features, as an attacker and a careful operator would try them:
 *  1. credential expiry (transport/credential-expiry.ts, the mTLS listener and the bridge):
 *     rotations in a row and after a withdrawn root, handshakes straddling a rotation,
 *     hundreds of connections ending at once, a certificate with under a second left, a
 *     call in flight at the cut, a WebSocket through the sidecar pair;
 *  2. certificate file reload (cert-files-watch.ts, core/file-watch.ts): a Kubernetes
 *     Secret volume's symlink swap, truncation, expired, not yet valid and foreign sets,
 *     a directory deleted, bursts of renewals and of SIGHUPs, a SIGHUP during a drain;
 *  3. config file reload (cli/proxy-config-file.ts): the file deleted or made a
 *     directory, shared addresses, a huge file, bursts of edits, a TCP upstream's Service
 *     removed;
 *  4. passthrough (tcp/passthrough.ts) across network namespaces with iptables: in its own
 *     file, test/redirect/passthrough-review.test.ts.
 * Every process is started through the test helpers and stopped by them.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, mkdirSync, readFileSync, renameSync, rmSync, symlinkSync, truncateSync, unlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import tls from "node:tls";
import { CredentialExpiry } from "../../src/proxy/transport/credential-expiry.ts";
import type { ListenerTls } from "../../src/proxy/transport/h1-server/listener.ts";
import { TlsBridge } from "../../src/proxy/transport/tls-bridge.ts";
import { TCP_ALPN } from "../../src/proxy/tcp/wire.ts";
import { fromNow, makeIntermediate, makeLeaf, makeRoot, pemOf, type Issued } from "../helpers/certs.ts";
import { GET, listenerLab, ORDERS, PAYMENTS, TD, type ListenerLab } from "../helpers/mtls-listener-lab.ts";
import { eventually } from "../helpers/wait.ts";
import { muxPool } from "../helpers/mux-pool.ts";
import { mesh } from "../helpers/cli.ts";
import { MeshFixture, metricValue } from "../helpers/mesh-fixture.ts";
import { tcpEchoService, tcpExchange, type TcpService } from "../helpers/tcp.ts";
import { WsClient } from "../helpers/ws-client.ts";
import { wsService } from "../helpers/ws-service.ts";
import { steadyTraffic } from "../helpers/traffic.ts";

// ---------------------------------------------------------------------------------------
// 1. Credential expiry, on the real listener over loopback mTLS (in process)
// ---------------------------------------------------------------------------------------

describe("credential expiry: the mTLS listener", () => {
  let lab: ListenerLab;
  let root: Issued, int: Issued, payments: Issued;
  beforeAll(async () => {
    lab = await listenerLab();
    ({ root, int, payments } = lab);
  });
  afterAll(() => lab?.close());
  const tlsOf = (leaf: Issued, issuer?: Issued, bundle?: string) => lab.tlsOf(leaf, issuer, bundle);
  const listen = (tls: ListenerTls, withdrawnTrustGraceMs?: number) => lab.listen(tls, withdrawnTrustGraceMs);
  const client = (port: number, leaf: Issued, o?: Parameters<ListenerLab["client"]>[2]) => lab.client(port, leaf, o);

  // Tests marked test.concurrent run side by side with their neighbours so marked: each has
  // listeners (or a bridge) of its own, and mostly waits out a grace or a short certificate;
  // their bounds are a second or more, and a late timer only makes their waits longer. The
  // 300 connections, the most CPU-bound, have only the light rotation test beside them; the
  // certificate with under a second left and the 50 rotations (50 keys made) run alone.
  test.concurrent("300 connections whose caller's certificate ends at the same second: each idle HTTP/1.1 one retired once, each carried one cut at the end, none left", async () => {
    const { listener, port, ends, tcpClosed } = listen(tlsOf(payments));
    const orders = await makeLeaf(int, { uris: [ORDERS], notAfter: fromNow(9000) });
    const notAfter = orders.cert.notAfter.getTime();
    const h1 = await Promise.all(Array.from({ length: 150 }, () => client(port, orders)));
    const carried = await Promise.all(Array.from({ length: 150 }, () => client(port, orders, { alpn: TCP_ALPN })));
    expect((await Promise.all([...h1, ...carried].map((c) => c.ready))).every(Boolean)).toBe(true);
    expect(Date.now()).toBeLessThan(notAfter - 2500);
    expect(await eventually(() => [...h1, ...carried].every((c) => c.state.closed), notAfter + 3000 - Date.now())).toBe(true);
    // The HTTP/1.1 ones ended in order before the end; the carried ones at it.
    for (const c of h1) {
      expect(c.state.error).toBeUndefined();
      expect(c.state.closedAt).toBeLessThan(notAfter);
    }
    for (const c of carried) expect(c.state.closedAt).toBeGreaterThanOrEqual(notAfter - 1000);
    expect(ends.filter((e) => e === "certificate-expiring").length).toBe(300);
    expect(ends.filter((e) => e === "certificate-expired").length).toBe(150);
    expect(ends.length).toBe(450);
    expect(await eventually(() => listener.openConnections === 0 && tcpClosed.count === 150, 3000)).toBe(true);
  }, 40_000);

  test.concurrent("an ordinary rotation after one that withdrew a root does not cut connections proven under the new bundle", async () => {
    const { listener, port, ends } = listen(tlsOf(payments), 1000);
    const nextRoot = await makeRoot({ trustDomain: TD });
    const nextInt = await makeIntermediate(nextRoot);
    // First rotation: the old root leaves the bundle (connections under it would be cut in 1 s here).
    listener.rotate(tlsOf(await makeLeaf(nextInt, { uris: [PAYMENTS] }), nextInt, nextRoot.pem));
    // Its grace is over before a caller under the new root even connects (half a second past it).
    await Bun.sleep(1_500);
    const orders = await makeLeaf(nextInt, { uris: [ORDERS], notAfter: fromNow(3_600_000) });
    const carried = await client(port, orders, { alpn: TCP_ALPN, issuer: nextInt, ca: nextRoot.pem });
    expect(await carried.ready).toBe(true);
    carried.state.socket!.write("ping");
    expect(await eventually(() => carried.state.text === "ping", 5000)).toBe(true);
    ends.length = 0;
    // Second rotation: a renewed leaf, the same bundle; nothing is withdrawn.
    listener.rotate(tlsOf(await makeLeaf(nextInt, { uris: [PAYMENTS] }), nextInt, nextRoot.pem));
    // Longer than the 1 s grace: a cut brought forward by the rotation would have come by now.
    await Bun.sleep(1500);
    // It is asked to move (carried TCP cannot), not cut for a root it never chained to.
    expect(ends).toEqual(["rotation"]);
    expect(carried.state.closed).toBe(false);
    carried.state.socket!.end();
  }, 30_000);

  test("a caller certificate with under a second left: its connection and the request it holds are cut by the end", async () => {
    const { port, ends, served } = listen(tlsOf(payments));
    let orders = await makeLeaf(int, { uris: [ORDERS], notAfter: fromNow(1999) });
    for (let i = 0; i < 5 && orders.cert.notAfter.getTime() - Date.now() < 600; i++) orders = await makeLeaf(int, { uris: [ORDERS], notAfter: fromNow(1999) });
    const notAfter = orders.cert.notAfter.getTime();
    expect(notAfter - Date.now()).toBeLessThan(2000);
    const c = await client(port, orders);
    expect(await c.ready).toBe(true);
    c.state.socket!.write(GET("/hold"));
    expect(await eventually(() => served.length === 1, 2000)).toBe(true);
    expect(await eventually(() => c.state.closed, notAfter + 2000 - Date.now())).toBe(true);
    expect(c.state.text).toBe("");
    expect(ends).toEqual(["certificate-expiring", "certificate-expired"]);
  }, 20_000);

  test("50 rotations in a row: each open connection is retired once, the port serves on, and after closeAll nothing accepts on it", async () => {
    const { listener, port, ends } = listen(tlsOf(payments));
    const orders = await makeLeaf(int, { uris: [ORDERS], notAfter: fromNow(3_600_000) });
    const held = await client(port, orders);
    expect(await held.ready).toBe(true);
    held.state.socket!.write(GET("/hold"));
    let sessions = 0;
    const pool = muxPool(port, { leaf: orders, issuer: int, root }, PAYMENTS, TD, () => sessions++);
    lab.defer(() => pool.close());
    const first = await pool.send({ method: "GET", pathAndQuery: "/first", headers: new Headers(), body: null });
    expect(first.status).toBe(200);
    await first.text();
    const inFlight = pool.send({ method: "GET", pathAndQuery: "/hold", headers: new Headers(), body: null }).then(
      () => "answered",
      () => "failed",
    );
    await Bun.sleep(200);
    const leaves = await Promise.all(Array.from({ length: 50 }, () => makeLeaf(int, { uris: [PAYMENTS] })));
    for (const leaf of leaves) listener.rotate(tlsOf(leaf));
    // One retirement per connection (the held HTTP/1.1 one and the session), however many rotations.
    expect(ends).toEqual(["rotation", "rotation"]);
    const fresh = await client(port, orders);
    expect(await fresh.ready).toBe(true);
    fresh.state.socket!.write(GET("/after"));
    expect(await eventually(() => fresh.state.text.includes(`hi ${ORDERS}`), 5000)).toBe(true);
    listener.closeAll();
    expect(await eventually(() => held.state.closed, 3000)).toBe(true);
    expect(await Promise.race([inFlight, Bun.sleep(3000).then(() => "hung")])).toBe("failed");
    // No listener of the 51 is left accepting.
    const probe = await Bun.connect<undefined>({ hostname: "127.0.0.1", port, socket: { data: () => {} } }).then(
      (s) => (s.end(), "accepted"),
      () => "refused",
    );
    expect(probe).toBe("refused");
  }, 30_000);

  test.concurrent("handshakes straddling a root-withdrawing rotation are cut with the rest: after the grace no connection proven by the old root is open", async () => {
    const { listener, port } = listen(tlsOf(payments), 3000);
    const orders = await makeLeaf(int, { uris: [ORDERS], notAfter: fromNow(3_600_000) });
    const nextRoot = await makeRoot({ trustDomain: TD });
    const nextInt = await makeIntermediate(nextRoot);
    const nextTls = tlsOf(await makeLeaf(nextInt, { uris: [PAYMENTS] }), nextInt, nextRoot.pem);
    // 60 carried-TCP callers connect over ~60 ms; the rotation lands in the middle of their handshakes.
    const pending: Promise<Awaited<ReturnType<typeof client>>>[] = [];
    let rotatedAt = 0;
    for (let i = 0; i < 60; i++) {
      pending.push(client(port, orders, { alpn: TCP_ALPN, ca: root.pem + nextRoot.pem }));
      if (i === 30) {
        await Bun.sleep(2);
        listener.rotate(nextTls);
        rotatedAt = Date.now();
      }
      await Bun.sleep(1);
    }
    const clients = await Promise.all(pending);
    await Promise.all(clients.map((c) => Promise.race([c.ready, Bun.sleep(5000)])));
    // Proven: the listener took the caller's certificate and carries its bytes.
    for (const c of clients) if (c.state.handshake && !c.state.closed) c.state.socket!.write("p");
    await Bun.sleep(1500);
    const proven = clients.filter((c) => c.state.text === "p");
    expect(proven.length).toBeGreaterThan(0);
    expect(await eventually(() => clients.every((c) => c.state.closed), rotatedAt + 7_000 - Date.now())).toBe(true);
    // Not before the grace: what they carried had its three seconds (ten by default).
    for (const c of proven) expect(c.state.closedAt - rotatedAt).toBeGreaterThanOrEqual(2_500);
  }, 30_000);

  test.concurrent("a call in flight on a mux stream when its caller's certificate ends fails at the cut instead of hanging", async () => {
    const { port, ends } = listen(tlsOf(payments));
    const orders = await makeLeaf(int, { uris: [ORDERS], notAfter: fromNow(4000) });
    const notAfter = orders.cert.notAfter.getTime();
    const pool = muxPool(port, { leaf: orders, issuer: int, root }, PAYMENTS, TD, () => {});
    lab.defer(() => pool.close());
    const outcome = pool.send({ method: "GET", pathAndQuery: "/hold", headers: new Headers(), body: null }).then(
      () => ({ how: "answered", at: Date.now() }),
      () => ({ how: "failed", at: Date.now() }),
    );
    const r = await Promise.race([outcome, Bun.sleep(notAfter + 4000 - Date.now()).then(() => ({ how: "hung", at: Date.now() }))]);
    expect(r.how).toBe("failed");
    expect(r.at).toBeGreaterThanOrEqual(notAfter - 1000);
    expect(ends).toContain("certificate-expired");
  }, 20_000);

  test.concurrent("the API bridge: a client gone before its end leaves no identity or watch behind; one that stays is cut at its end, its identity forgotten", async () => {
    const server = await makeLeaf(int, { uris: [`spiffe://${TD}/ns/mesh/sa/control-plane`] });
    const bridge = new TlsBridge({ cert: pemOf(server, int), key: server.keyPem, ca: root.pem, trustDomain: TD }, { onRefused: () => {}, onOpen: () => {}, onClose: () => {} });
    const inner = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: (req, srv) => new Response(`hello ${bridge.identityOf(srv.requestIP(req))}`) });
    const port = bridge.listen("127.0.0.1", 0, inner.port!);
    const watched = () => (bridge as unknown as { expiry: CredentialExpiry<unknown> }).expiry.size;
    try {
      const orders = await makeLeaf(int, { uris: [ORDERS], notAfter: fromNow(4000) });
      const notAfter = orders.cert.notAfter.getTime();
      const leavers = await Promise.all(Array.from({ length: 20 }, () => client(port, orders)));
      expect((await Promise.all(leavers.map((c) => c.ready))).every(Boolean)).toBe(true);
      for (const c of leavers) c.state.socket!.write(GET("/who"));
      expect(await eventually(() => leavers.every((c) => c.state.text.includes(`hello ${ORDERS}`)), 5000)).toBe(true);
      const stayer = await client(port, orders);
      expect(await stayer.ready).toBe(true);
      stayer.state.socket!.write(GET("/who"));
      expect(await eventually(() => stayer.state.text.includes(`hello ${ORDERS}`), 5000)).toBe(true);
      for (const c of leavers) c.state.socket!.end();
      expect(await eventually(() => bridge.openLinks === 1 && bridge.identified === 1 && watched() === 1, 5000)).toBe(true);
      expect(await eventually(() => stayer.state.closed, notAfter + 2000 - Date.now())).toBe(true);
      expect(stayer.state.closedAt).toBeGreaterThanOrEqual(notAfter - 1000);
      expect(await eventually(() => bridge.openLinks === 0 && bridge.identified === 0 && watched() === 0, 3000)).toBe(true);
    } finally {
      bridge.closeAll();
      inner.stop(true);
    }
  }, 20_000);
});

describe("credential expiry: a WebSocket through the sidecar pair", () => {
  const fx = new MeshFixture();
  beforeAll(async () => {
    await fx.init();
    await fx.issue("payments");
  });
  afterAll(() => fx.close());

  test("the caller's sidecar certificate nearing its end closes the WebSocket with 1001 on both sides before the end, not by a cut", async () => {
    const ws = wsService();
    try {
      const payments = await fx.proxy("payments", ws.url);
      const dir = join(fx.tmp.path, "certs", "orders");
      // 8 s: the sidecar starts and the WebSocket opens in a second or two, and its connection is
      // retired a quarter of what was left at its start (over a second) before the end.
      const r = await mesh("ca", "issue", "--service", "orders", "--ca-dir", fx.ca, "--out", dir, "--force", "--ttl", "8s");
      expect(r.code).toBe(0);
      const notAfter = Date.parse(/valid until (\S+)/.exec(r.out)![1]!);
      const orders = await fx.proxy("orders", fx.echo("orders").url, fx.config("orders-ws", { payments: [payments.ports.inbound] }));
      const client = new WsClient(`ws://127.0.0.1:${orders.ports.outbound}/chat`, { headers: { host: "payments" } });
      expect(await client.opened).toBe(true);
      expect(await client.json()).toMatchObject({ hello: true, caller: "spiffe://mesh.local/ns/default/sa/orders" });
      const closed = await client.closedWithin(notAfter + 3000 - Date.now());
      expect(Date.now()).toBeLessThan(notAfter);
      expect(closed.code).toBe(1001);
      expect(await eventually(() => ws.closes.length === 1, 5000)).toBe(true);
      expect(ws.closes[0]).toMatchObject({ code: 1001 });
    } finally {
      ws.stop();
    }
  }, 40_000);
});

// ---------------------------------------------------------------------------------------
// 2. Certificate file reload, with real sidecars and certificates made here (mesh.local)
// ---------------------------------------------------------------------------------------

describe("certificate file reload", () => {
  const fx = new MeshFixture();
  const TD = "mesh.local";
  const PAYMENTS = `spiffe://${TD}/ns/default/sa/payments`;
  const ORDERS = `spiffe://${TD}/ns/default/sa/orders`;
  let root: Issued, int: Issued;
  let echoUrl: string;
  const HOUR = 3_600_000;

  beforeAll(async () => {
    root = await makeRoot({ trustDomain: TD });
    int = await makeIntermediate(root);
    writeSet(join(fx.tmp.path, "certs", "orders"), await makeLeaf(int, { uris: [ORDERS] }));
    echoUrl = fx.echo("payments").url;
  });
  afterAll(() => fx.close());

  const paymentsLeaf = (o: Parameters<typeof makeLeaf>[1] = {}) => makeLeaf(int, { uris: [PAYMENTS], ...o });
  const fileOf = (dir: string) => ({ chain: join(dir, "chain.pem"), key: join(dir, "key.pem"), bundle: join(dir, "bundle.pem") });

  /** Writes a set as `mesh ca issue` lays it out: each file to a temporary name, then renamed over the old. */
  function writeSet(dir: string, leaf: Issued, o: { issuer?: Issued; bundle?: string } = {}): void {
    mkdirSync(dir, { recursive: true });
    const f = fileOf(dir);
    const put = (path: string, text: string) => {
      writeFileSync(`${path}.tmp`, text);
      renameSync(`${path}.tmp`, path);
    };
    put(f.chain, pemOf(leaf, o.issuer ?? int));
    put(f.key, leaf.keyPem);
    put(f.bundle, o.bundle ?? root.pem);
  }

  /** A payments sidecar reading its certificate from `files`. */
  const startPayments = (files: { chain: string; key: string; bundle: string }, extra: string[] = [], upstream = echoUrl) =>
    fx.proxy("payments", upstream, undefined, ["--cert", files.chain, "--key", files.key, "--ca", files.bundle, ...extra]);

  const expiry = (admin: number) => metricValue(admin, "mesh_certificate_expiry_seconds");
  const seconds = (leaf: Issued) => Math.floor(leaf.cert.notAfter.getTime() / 1000);

  /** One call to a sidecar's inbound as orders (a new mTLS connection): its status, and the notAfter (s) of the certificate it was served. */
  function probe(port: number): Promise<{ status: number; notAfter: number }> {
    const d = join(fx.tmp.path, "certs", "orders");
    return new Promise((resolve, reject) => {
      let text = "";
      let notAfter = 0;
      const sock = tls.connect({ port, host: "127.0.0.1", cert: readFileSync(join(d, "chain.pem")), key: readFileSync(join(d, "key.pem")), ca: readFileSync(join(d, "bundle.pem")), checkServerIdentity: () => undefined }, () => {
        notAfter = Math.floor(Date.parse(sock.getPeerCertificate().valid_to) / 1000);
        sock.write("GET /probe HTTP/1.1\r\nHost: payments\r\nConnection: close\r\n\r\n");
      });
      sock.setTimeout(5000, () => sock.destroy(new Error("probe timed out")));
      sock.on("data", (d) => void (text += d.toString()));
      sock.on("end", () => resolve({ status: Number(/^HTTP\/1\.1 (\d+)/.exec(text)?.[1] ?? 0), notAfter }));
      sock.on("error", reject);
    });
  }

  // Tests marked test.concurrent run in pairs, side by side: each has a sidecar and a directory
  // of its own, and waits on its own log, files and calls with seconds of room. Those with a
  // short window (a set valid 3 s from now) or much CPU (100 rewrites, 50 keys) run alone.
  test.concurrent("a Kubernetes Secret volume's ..data symlink swap is taken as it happens", async () => {
    const vol = join(fx.tmp.path, "secret-volume");
    const first = await paymentsLeaf({ notAfter: fromNow(2 * HOUR) });
    writeSet(join(vol, "..2026_12_07_v1"), first);
    symlinkSync("..2026_12_07_v1", join(vol, "..data"));
    for (const f of ["chain.pem", "key.pem", "bundle.pem"]) symlinkSync(join("..data", f), join(vol, f));
    const p = await startPayments(fileOf(vol));
    expect(await expiry(p.ports.admin)).toBe(seconds(first));
    // The kubelet's swap: a new timestamped directory, a temporary link to it renamed over ..data, the old directory removed.
    const next = await paymentsLeaf({ notAfter: fromNow(10 * HOUR) });
    writeSet(join(vol, "..2026_12_07_v2"), next);
    symlinkSync("..2026_12_07_v2", join(vol, "..data_tmp"));
    renameSync(join(vol, "..data_tmp"), join(vol, "..data"));
    rmSync(join(vol, "..2026_12_07_v1"), { recursive: true });
    expect(await eventually(async () => (await expiry(p.ports.admin)) === seconds(next), 10_000)).toBe(true);
    expect(await probe(p.ports.inbound)).toEqual({ status: 200, notAfter: seconds(next) });
    expect(p.stderr()).not.toContain("certificate files not taken");
  }, 30_000);

  test.concurrent("a chain file truncated to zero bytes is refused, naming it, while the last good set serves; the set written after is taken", async () => {
    const dir = join(fx.tmp.path, "truncated");
    const first = await paymentsLeaf({ notAfter: fromNow(2 * HOUR) });
    writeSet(dir, first);
    const p = await startPayments(fileOf(dir));
    truncateSync(fileOf(dir).chain, 0);
    expect(await eventually(() => p.stderr().includes("certificate files not taken") && p.stderr().includes(fileOf(dir).chain), 10_000)).toBe(true);
    expect(await probe(p.ports.inbound)).toEqual({ status: 200, notAfter: seconds(first) });
    expect(await expiry(p.ports.admin)).toBe(seconds(first));
    // The writer finishes (in place, as `cat > file` does).
    const next = await paymentsLeaf({ notAfter: fromNow(7 * HOUR) });
    writeFileSync(fileOf(dir).chain, pemOf(next, int));
    writeFileSync(fileOf(dir).key, next.keyPem);
    expect(await eventually(async () => (await expiry(p.ports.admin)) === seconds(next), 10_000)).toBe(true);
    expect(await probe(p.ports.inbound)).toEqual({ status: 200, notAfter: seconds(next) });
  }, 30_000);

  test("an expired set and a not-yet-valid set are refused, naming the chain; the second is taken on SIGHUP once its time comes", async () => {
    const dir = join(fx.tmp.path, "validity");
    const first = await paymentsLeaf({ notAfter: fromNow(2 * HOUR) });
    writeSet(dir, first);
    const p = await startPayments(fileOf(dir));
    writeSet(dir, await paymentsLeaf({ notBefore: fromNow(-2 * HOUR), notAfter: fromNow(-60_000) }));
    expect(await eventually(() => p.stderr().includes("expired at") && p.stderr().includes(fileOf(dir).chain), 10_000)).toBe(true);
    expect(await probe(p.ports.inbound)).toEqual({ status: 200, notAfter: seconds(first) });
    const early = await paymentsLeaf({ notBefore: fromNow(3000), notAfter: fromNow(5 * HOUR) });
    writeSet(dir, early);
    expect(await eventually(() => p.stderr().includes("is not valid until"), 10_000)).toBe(true);
    expect(await expiry(p.ports.admin)).toBe(seconds(first));
    expect(await probe(p.ports.inbound)).toEqual({ status: 200, notAfter: seconds(first) });
    await Bun.sleep(Math.max(0, early.cert.notBefore.getTime() + 500 - Date.now()));
    p.proc.kill("SIGHUP");
    expect(await eventually(async () => (await expiry(p.ports.admin)) === seconds(early), 5000)).toBe(true);
    expect(p.proc.exitCode).toBeNull();
  }, 30_000);

  test.concurrent("a set for the same name in another trust domain, with its own bundle, is refused; the last good serves", async () => {
    const dir = join(fx.tmp.path, "foreign");
    const first = await paymentsLeaf({ notAfter: fromNow(2 * HOUR) });
    writeSet(dir, first);
    const p = await startPayments(fileOf(dir));
    const otherRoot = await makeRoot({ trustDomain: "other.example" });
    const otherInt = await makeIntermediate(otherRoot);
    writeSet(dir, await makeLeaf(otherInt, { uris: ["spiffe://other.example/ns/default/sa/payments"] }), { issuer: otherInt, bundle: otherRoot.pem });
    expect(await eventually(() => p.stderr().includes("spiffe://other.example/ns/default/sa/payments, and this sidecar is spiffe://mesh.local/ns/default/sa/payments"), 10_000)).toBe(true);
    expect(await expiry(p.ports.admin)).toBe(seconds(first));
    expect(await probe(p.ports.inbound)).toEqual({ status: 200, notAfter: seconds(first) });
  }, 30_000);

  test.concurrent("a chain file replaced by a directory and a key file by a dangling symlink: each refused with the file named, the sidecar serving on", async () => {
    const dir = join(fx.tmp.path, "not-files");
    const first = await paymentsLeaf({ notAfter: fromNow(2 * HOUR) });
    writeSet(dir, first);
    const p = await startPayments(fileOf(dir));
    const f = fileOf(dir);
    rmSync(f.chain);
    mkdirSync(f.chain);
    expect(await eventually(() => p.stderr().includes("is not a regular file") && p.stderr().includes(f.chain), 10_000)).toBe(true);
    rmSync(f.chain, { recursive: true });
    writeFileSync(f.chain, pemOf(first, int));
    unlinkSync(f.key);
    symlinkSync(join(dir, "nowhere.pem"), f.key);
    expect(await eventually(() => p.stderr().includes("private key not found") && p.stderr().includes(f.key), 10_000)).toBe(true);
    expect(await probe(p.ports.inbound)).toEqual({ status: 200, notAfter: seconds(first) });
    expect(p.proc.exitCode).toBeNull();
    // A key this process cannot read, where that can be shown (root reads anything).
    unlinkSync(f.key);
    writeFileSync(f.key, first.keyPem);
    chmodSync(f.key, 0o000);
    p.proc.kill("SIGHUP");
    await Bun.sleep(1000);
    if (process.getuid?.() !== 0) expect(p.stderr()).toContain("private key is not readable");
    expect(await probe(p.ports.inbound)).toEqual({ status: 200, notAfter: seconds(first) });
    expect(p.proc.exitCode).toBeNull();
  }, 30_000);

  test.concurrent("the certificate directory deleted and made again: the sidecar lives, says the files are gone, and takes the new set on SIGHUP", async () => {
    const dir = join(fx.tmp.path, "recreated");
    const first = await paymentsLeaf({ notAfter: fromNow(2 * HOUR) });
    writeSet(dir, first);
    const p = await startPayments(fileOf(dir));
    rmSync(dir, { recursive: true });
    p.proc.kill("SIGHUP");
    expect(await eventually(() => p.stderr().includes("not found") && p.stderr().includes(fileOf(dir).chain), 10_000)).toBe(true);
    expect(await probe(p.ports.inbound)).toEqual({ status: 200, notAfter: seconds(first) });
    const next = await paymentsLeaf({ notAfter: fromNow(9 * HOUR) });
    writeSet(dir, next);
    p.proc.kill("SIGHUP");
    expect(await eventually(async () => (await expiry(p.ports.admin)) === seconds(next), 5000)).toBe(true);
    expect(await probe(p.ports.inbound)).toEqual({ status: 200, notAfter: seconds(next) });
    expect(p.proc.exitCode).toBeNull();
  }, 30_000);

  test.concurrent("a storm of 300 SIGHUPs: the sidecar lives and serves, and takes nothing new", async () => {
    const dir = join(fx.tmp.path, "hangups");
    const first = await paymentsLeaf({ notAfter: fromNow(2 * HOUR) });
    writeSet(dir, first);
    const p = await startPayments(fileOf(dir), ["--config", fx.config("hangups", { payments: [1] })]);
    for (let i = 0; i < 300; i++) {
      p.proc.kill("SIGHUP");
      if (i % 20 === 0) await Bun.sleep(5);
    }
    await Bun.sleep(1000);
    expect(p.proc.exitCode).toBeNull();
    expect(await probe(p.ports.inbound)).toEqual({ status: 200, notAfter: seconds(first) });
    expect(p.stderr()).not.toContain("certificate reloaded");
    expect(p.stderr()).not.toContain("config reloaded");
  }, 30_000);

  test("100 rewrites in about a second, good and bad sets mixed: the sidecar ends on the last good set and never exits", async () => {
    const dir = join(fx.tmp.path, "burst");
    writeSet(dir, await paymentsLeaf({ notAfter: fromNow(2 * HOUR) }));
    const p = await startPayments(fileOf(dir));
    const good = await Promise.all(Array.from({ length: 50 }, (_, i) => paymentsLeaf({ notAfter: fromNow(3 * HOUR + i * 60_000) })));
    const stray = await paymentsLeaf();
    const started = Date.now();
    for (let i = 0; i < 100 && Date.now() - started < 5000; i++) {
      if (i % 2 === 0) writeSet(dir, good[i / 2]!);
      else writeFileSync(fileOf(dir).key, stray.keyPem); // a key that does not match
      await Bun.sleep(10);
    }
    const last = good[49]!;
    writeSet(dir, last);
    expect(await eventually(async () => (await expiry(p.ports.admin)) === seconds(last), 10_000)).toBe(true);
    expect(await probe(p.ports.inbound)).toEqual({ status: 200, notAfter: seconds(last) });
    expect(p.proc.exitCode).toBeNull();
  }, 30_000);

  test.concurrent("15 renewals in a row, a SIGHUP after each, under steady calls through the pair: no call fails, and the last set serves", async () => {
    const dir = join(fx.tmp.path, "renewals");
    writeSet(dir, await paymentsLeaf({ notAfter: fromNow(2 * HOUR) }));
    const p = await startPayments(fileOf(dir));
    const orders = await fx.proxy("orders", fx.echo("orders").url, fx.config("orders-renewals", { payments: [p.ports.inbound] }));
    const calls = steadyTraffic(orders.ports.outbound, "payments", 5, 5000, 30_000);
    expect(await eventually(() => calls.succeeded >= 20, 10_000)).toBe(true);
    const leaves = await Promise.all(Array.from({ length: 15 }, (_, i) => paymentsLeaf({ notAfter: fromNow(4 * HOUR + i * 60_000) })));
    for (const leaf of leaves) {
      writeSet(dir, leaf);
      p.proc.kill("SIGHUP");
      await Bun.sleep(150);
    }
    const last = leaves[14]!;
    expect(await eventually(async () => (await expiry(p.ports.admin)) === seconds(last), 10_000)).toBe(true);
    const seen = calls.succeeded;
    expect(await eventually(() => calls.succeeded >= seen + 20, 10_000)).toBe(true);
    expect((await calls.stop()).failures).toEqual([]);
    expect(await metricValue(p.ports.admin, "mesh_connections_retired_total", { reason: "rotation" })).toBeGreaterThanOrEqual(2);
    expect(await probe(p.ports.inbound)).toEqual({ status: 200, notAfter: seconds(last) });
  }, 60_000);

  test.concurrent("a SIGHUP during a drain does not end the sidecar before the call in flight is answered", async () => {
    const dir = join(fx.tmp.path, "drain-hangup");
    const first = await paymentsLeaf({ notAfter: fromNow(2 * HOUR) });
    writeSet(dir, first);
    const slow = fx.service(async () => {
      await Bun.sleep(2500);
      return new Response("late but whole");
    });
    const p = await startPayments(fileOf(dir), ["--drain-timeout", "10s"], slow.url);
    const d = join(fx.tmp.path, "certs", "orders");
    const call = fetch(`https://127.0.0.1:${p.ports.inbound}/slow`, {
      headers: { host: "payments" },
      tls: { cert: readFileSync(join(d, "chain.pem"), "utf8"), key: readFileSync(join(d, "key.pem"), "utf8"), ca: readFileSync(join(d, "bundle.pem"), "utf8"), rejectUnauthorized: false },
    } as RequestInit).then(
      async (res) => `${res.status} ${await res.text()}`,
      (err: Error) => `failed: ${err.message}`,
    );
    expect(await eventually(() => slow.hits === 1, 5000)).toBe(true);
    p.proc.kill("SIGTERM");
    await Bun.sleep(300);
    // A log rotation's or a supervisor's SIGHUP, while the drain waits for the call.
    p.proc.kill("SIGHUP");
    const answer = await call;
    const exit = await p.proc.exited;
    expect({ answer, exit, signal: p.proc.signalCode }).toEqual({ answer: "200 late but whole", exit: 0, signal: null });
  }, 30_000);
});

// ---------------------------------------------------------------------------------------
// 3. Config file reload, with real sidecars
// ---------------------------------------------------------------------------------------

describe("config file reload", () => {
  const fx = new MeshFixture();
  let echoTcp: TcpService;
  let ordersFile: string;
  let orders: Awaited<ReturnType<typeof fx.proxy>>;
  let paymentsA: Awaited<ReturnType<typeof fx.proxy>>;
  let paymentsB: Awaited<ReturnType<typeof fx.proxy>>;
  let tcpPort: number;

  /** Payments at `port`, with an http port and a tcp one; `extra` documents after it. */
  const service = (port: number, extra = "", addresses = "") =>
    `apiVersion: mesh.dev/v1alpha1\nkind: Service\nmetadata:\n  name: payments\nspec:\n${addresses}  ports:\n    - {name: http, port: 80}\n    - {name: pg, port: 5432, protocol: tcp, targetPort: ${echoTcp.port}}\n  endpoints:\n    - {address: 127.0.0.1, port: ${port}}\n${extra}`;
  const other = (name: string, addresses = "") => `---\napiVersion: mesh.dev/v1alpha1\nkind: Service\nmetadata:\n  name: ${name}\nspec:\n${addresses}  ports:\n    - {name: http, port: 80}\n  endpoints:\n    - {address: 127.0.0.1, port: 1}\n`;

  /** Which payments answers a call from orders, or the status it got. */
  async function whoAnswers(): Promise<string> {
    const res = await fetch(`http://127.0.0.1:${orders.ports.outbound}/who`, { headers: { host: "payments" } });
    return res.status === 200 ? ((await res.json()) as { service: string }).service : `${res.status}`;
  }
  const reloads = () => (orders.stderr().match(/config reloaded/g) ?? []).length;
  const refusals = () => (orders.stderr().match(/config file not taken/g) ?? []).length;

  beforeAll(async () => {
    await fx.init();
    await fx.issue("orders");
    await fx.issue("payments");
    echoTcp = tcpEchoService();
    const paymentsFile = join(fx.tmp.path, "payments.yaml");
    writeFileSync(paymentsFile, service(1));
    paymentsA = await fx.proxy("payments", fx.echo("payments-a").url, paymentsFile);
    paymentsB = await fx.proxy("payments", fx.echo("payments-b").url, paymentsFile);
    ordersFile = join(fx.tmp.path, "orders-config", "orders.yaml");
    mkdirSync(join(fx.tmp.path, "orders-config"));
    writeFileSync(ordersFile, service(paymentsA.ports.inbound));
    orders = await fx.proxy("orders", fx.echo("orders").url, ordersFile, ["--tcp-upstream", "payments:5432=127.0.0.1:0"]);
    tcpPort = (orders.ready as { tcp: number[] }).tcp[0]!;
  });
  afterAll(async () => {
    echoTcp?.stop();
    await fx.close();
  });

  test("the file deleted, then made an empty directory: each refused with the file named while the last good config serves; a file again is taken", async () => {
    expect(await whoAnswers()).toBe("payments-a");
    const before = refusals();
    unlinkSync(ordersFile);
    expect(await eventually(() => refusals() > before && orders.stderr().includes(ordersFile), 10_000)).toBe(true);
    expect(await whoAnswers()).toBe("payments-a");
    mkdirSync(ordersFile);
    expect(await eventually(() => refusals() > before + 1, 10_000)).toBe(true);
    expect(await whoAnswers()).toBe("payments-a");
    rmSync(ordersFile, { recursive: true });
    writeFileSync(ordersFile, service(paymentsB.ports.inbound));
    expect(await eventually(async () => (await whoAnswers()) === "payments-b", 10_000)).toBe(true);
    expect(orders.proc.exitCode).toBeNull();
  }, 30_000);

  test("an edit in which two Services share an address is refused, naming the address; the last good config serves", async () => {
    writeFileSync(ordersFile, service(paymentsA.ports.inbound));
    expect(await eventually(async () => (await whoAnswers()) === "payments-a", 10_000)).toBe(true);
    writeFileSync(ordersFile, service(paymentsB.ports.inbound, other("billing", "  addresses: [10.96.7.7]\n"), "  addresses: [10.96.7.7]\n"));
    expect(await eventually(() => orders.stderr().includes("10.96.7.7") && orders.stderr().includes("no two Services share an address"), 10_000)).toBe(true);
    await Bun.sleep(500);
    expect(await whoAnswers()).toBe("payments-a");
  }, 30_000);

  test("a huge file (3000 Services, half a megabyte) is taken, and calls go on; shrunk again, it is taken again", async () => {
    const before = reloads();
    const many = Array.from({ length: 3000 }, (_, i) => other(`svc-${i}`)).join("");
    const text = service(paymentsB.ports.inbound) + many;
    expect(text.length).toBeGreaterThan(400_000);
    writeFileSync(ordersFile, text);
    expect(await eventually(() => reloads() > before, 20_000)).toBe(true);
    expect(await eventually(async () => (await whoAnswers()) === "payments-b", 10_000)).toBe(true);
    const res = await fetch(`http://127.0.0.1:${orders.ports.outbound}/x`, { headers: { host: "svc-2999" } });
    // Known (its endpoint refuses), not 404 no-route.
    expect(res.status).not.toBe(404);
    writeFileSync(ordersFile, service(paymentsA.ports.inbound));
    expect(await eventually(async () => (await whoAnswers()) === "payments-a", 20_000)).toBe(true);
    expect(orders.proc.exitCode).toBeNull();
  }, 60_000);

  test("60 edits in about a second: no call meanwhile sees anything but a good config, and the last edit wins", async () => {
    writeFileSync(ordersFile, service(paymentsA.ports.inbound));
    expect(await eventually(async () => (await whoAnswers()) === "payments-a", 10_000)).toBe(true);
    const seen = new Set<string>();
    let stopped = false;
    const calls = (async () => {
      for (let i = 0; i < 2000 && !stopped; i++) {
        seen.add(await whoAnswers().catch((e: Error) => e.message));
        await Bun.sleep(5);
      }
    })();
    for (let i = 0; i < 60; i++) {
      writeFileSync(ordersFile, service(i % 2 === 0 ? paymentsB.ports.inbound : paymentsA.ports.inbound));
      await Bun.sleep(15);
    }
    writeFileSync(ordersFile, service(paymentsB.ports.inbound));
    expect(await eventually(async () => (await whoAnswers()) === "payments-b", 10_000)).toBe(true);
    await Bun.sleep(1000);
    stopped = true;
    await calls;
    for (let i = 0; i < 5; i++) expect(await whoAnswers()).toBe("payments-b");
    expect([...seen].filter((s) => s !== "payments-a" && s !== "payments-b")).toEqual([]);
  }, 30_000);

  test("an edit that removes the Service a --tcp-upstream carries to: warned, new connections refused, and carried again once it is back", async () => {
    writeFileSync(ordersFile, service(paymentsA.ports.inbound));
    expect(await eventually(async () => (await whoAnswers()) === "payments-a", 10_000)).toBe(true);
    const first = await tcpExchange(tcpPort, "ping", { timeoutMs: 5000 });
    expect(first.text).toBe("pingbye 4");
    writeFileSync(ordersFile, other("billing").slice(4));
    expect(await eventually(() => orders.stderr().includes('tcp upstream: no Service \\"payments\\" in the config') || orders.stderr().includes('tcp upstream: no Service "payments" in the config'), 10_000)).toBe(true);
    const refused = await tcpExchange(tcpPort, "ping", { timeoutMs: 5000 });
    expect(refused.text).toBe("");
    expect(await whoAnswers()).toBe("404");
    writeFileSync(ordersFile, service(paymentsB.ports.inbound));
    expect(await eventually(async () => (await tcpExchange(tcpPort, "pong", { timeoutMs: 5000 })).text === "pongbye 4", 10_000)).toBe(true);
    expect(await whoAnswers()).toBe("payments-b");
  }, 30_000);
});
