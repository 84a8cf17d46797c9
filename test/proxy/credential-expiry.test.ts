/**
 * No inbound mTLS connection outlives the certificates that proved it: the real listener
 * over loopback mTLS, with callers whose certificates end seconds from now. Before the
 * end a connection is asked to move (HTTP/1.1 closed after its response, a mux session
 * told GOAWAY), at the end it is cut; a rotation moves every connection, and one whose
 * root left the bundle is cut soon after.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { CredentialExpiry, trustWithdrawn } from "../../src/proxy/transport/credential-expiry.ts";
import type { ListenerTls } from "../../src/proxy/transport/h1-server/listener.ts";
import { TCP_ALPN } from "../../src/proxy/tcp/wire.ts";
import { fromNow, makeIntermediate, makeLeaf, makeRoot, type Issued } from "../helpers/certs.ts";
import { GET, listenerLab, ORDERS, PAYMENTS, TD, type ListenerLab } from "../helpers/mtls-listener-lab.ts";
import { eventually } from "../helpers/wait.ts";
import { muxPool } from "../helpers/mux-pool.ts";

let lab: ListenerLab;
let root: Issued, int: Issued, payments: Issued;

beforeAll(async () => {
  lab = await listenerLab();
  ({ root, int, payments } = lab);
});
afterAll(() => lab?.close());

const tlsOf = (leaf: Issued, issuer?: Issued, bundle?: string) => lab.tlsOf(leaf, issuer, bundle);
/** An orders certificate that ends `ms` from now. */
const ordersFor = (ms: number, issuer = int) => makeLeaf(issuer, { uris: [ORDERS], notAfter: fromNow(ms) });
const listen = (tls: ListenerTls, withdrawnTrustGraceMs?: number) => lab.listen(tls, withdrawnTrustGraceMs);
/** A raw TLS client presenting `leaf`, its handshake done: what it read, and how its connection ended. */
async function client(port: number, leaf: Issued, alpn = "http/1.1") {
  const { state, ready } = await lab.client(port, leaf, { alpn });
  await ready;
  return state;
}

describe("the schedule", () => {
  test("retired before the end, cut at it; a forgotten connection is neither", async () => {
    const events: string[] = [];
    const expiry = new CredentialExpiry<string>((c, why) => events.push(`retire ${c} ${why}`), (c, why) => events.push(`cut ${c} ${why}`));
    lab.defer(() => expiry.close());
    expiry.watch("a", Date.now() + 400);
    expiry.watch("b", Date.now() + 400);
    expiry.forget("b");
    expect(await eventually(() => events.length === 2, 3000)).toBe(true);
    expect(events).toEqual(["retire a certificate-expiring", "cut a certificate-expired"]);
    expect(expiry.size).toBe(0);
  });

  test("a rotation retires every connection now; a withdrawn root brings the cut forward", async () => {
    const events: string[] = [];
    const expiry = new CredentialExpiry<string>((c, why) => events.push(`retire ${c} ${why}`), (c, why) => events.push(`cut ${c} ${why}`));
    lab.defer(() => expiry.close());
    expiry.watch("a", Date.now() + 3_600_000);
    expiry.watch("b", Date.now() + 3_600_000);
    expiry.retireNow("a");
    expect(events).toEqual(["retire a rotation"]);
    expiry.retireAll(Date.now() + 200);
    expect(events).toEqual(["retire a rotation", "retire b trust-withdrawn"]);
    expect(await eventually(() => events.length === 4, 3000)).toBe(true);
    expect(events.slice(2).sort()).toEqual(["cut a trust-withdrawn", "cut b trust-withdrawn"]);
  });

  test("an end past setTimeout's range (24.8 days) waits, rather than firing at once", async () => {
    const events: string[] = [];
    const expiry = new CredentialExpiry<string>((c) => events.push(`retire ${c}`), (c) => events.push(`cut ${c}`));
    lab.defer(() => expiry.close());
    expiry.watch("year", Date.now() + 365 * 86_400_000);
    await Bun.sleep(300);
    expect(events).toEqual([]);
    expect(expiry.size).toBe(1);
  });

  test("a bundle that lost a root withdrew trust; one that only gained a root did not", async () => {
    const next = await makeRoot({ trustDomain: TD });
    expect(trustWithdrawn(root.pem, root.pem + next.pem)).toBe(false);
    expect(trustWithdrawn(root.pem + next.pem, next.pem)).toBe(true);
    expect(trustWithdrawn(root.pem, next.pem)).toBe(true);
    // Only the certificates count, not how the text is laid out.
    expect(trustWithdrawn(root.pem + next.pem, `${next.pem}\n\n${root.pem}`)).toBe(false);
  });
});

describe("inbound connections and their callers' certificates", () => {
  test("an idle kept-alive HTTP/1.1 connection is closed in order before its caller's certificate ends", async () => {
    const { port, ends } = listen(tlsOf(payments));
    const orders = await ordersFor(8000);
    const notAfter = orders.cert.notAfter.getTime();
    const c = await client(port, orders);
    c.socket!.write(GET("/first"));
    expect(await eventually(() => c.text.includes(`hi ${ORDERS}`), 5000)).toBe(true);
    expect(await eventually(() => c.closed, 12_000)).toBe(true);
    expect(c.error).toBeUndefined();
    // Asked to move a quarter of its time before the end (2 s here), not cut at it.
    expect(ends).toEqual(["certificate-expiring"]);
    expect(Date.now()).toBeLessThan(notAfter);
  }, 20_000);

  test("a request still unanswered when the certificate ends is cut with its connection", async () => {
    const { listener, port, ends } = listen(tlsOf(payments));
    const orders = await ordersFor(3000);
    const c = await client(port, orders);
    c.socket!.write(GET("/hold"));
    expect(await eventually(() => c.closed, 10_000)).toBe(true);
    expect(c.text).toBe("");
    expect(Date.now()).toBeGreaterThanOrEqual(orders.cert.notAfter.getTime());
    expect(ends).toEqual(["certificate-expiring", "certificate-expired"]);
    expect(await eventually(() => listener.openConnections === 0, 5000)).toBe(true);
  }, 20_000);

  test("a mux session moves to new sessions as its caller's certificate nears its end; after it no call is served", async () => {
    const { port, ends, served } = listen(tlsOf(payments));
    const orders = await ordersFor(6000);
    const notAfter = orders.cert.notAfter.getTime();
    let sessions = 0;
    const pool = muxPool(port, { leaf: orders, issuer: int, root }, PAYMENTS, TD, () => sessions++);
    lab.defer(() => pool.close());
    // Steady traffic up to a second past the end, bounded by count and time.
    const results: { at: number; ok: boolean }[] = [];
    for (let i = 0; i < 2000 && Date.now() < notAfter + 1000; i++) {
      const at = Date.now();
      const ok = await pool
        .send({ method: "GET", pathAndQuery: `/r${i}`, headers: new Headers(), body: null })
        .then(async (res) => res.status === 200 && (await res.text()) === `hi ${ORDERS}`)
        .catch(() => false);
      results.push({ at, ok });
      await Bun.sleep(20);
    }
    // Every call made well before the end was served, across the moves.
    expect(results.filter((r) => r.at < notAfter - 500 && !r.ok)).toEqual([]);
    expect(sessions).toBeGreaterThanOrEqual(2);
    expect(ends[0]).toBe("certificate-expiring");
    // After the end the certificate cannot open a session, and none open before serves a call.
    expect(results.filter((r) => r.at > notAfter + 200 && r.ok)).toEqual([]);
    expect(served.filter((t) => t > notAfter + 200)).toEqual([]);
  }, 20_000);
});

describe("rotation", () => {
  test("a new certificate moves HTTP/1.1 connections; carried TCP keeps to its certificates' end", async () => {
    const { listener, port, ends, tcpClosed } = listen(tlsOf(payments));
    const orders = await ordersFor(3_600_000);
    const h1 = await client(port, orders);
    h1.socket!.write(GET("/before"));
    expect(await eventually(() => h1.text.includes(`hi ${ORDERS}`), 5000)).toBe(true);
    const carried = await client(port, orders, TCP_ALPN);
    carried.socket!.write("ping");
    expect(await eventually(() => carried.text === "ping", 5000)).toBe(true);

    listener.rotate(tlsOf(await makeLeaf(int, { uris: [PAYMENTS] })));
    expect(await eventually(() => h1.closed, 5000)).toBe(true);
    expect(h1.error).toBeUndefined();
    expect(ends).toEqual(["rotation", "rotation"]);
    await Bun.sleep(1000);
    expect(carried.closed).toBe(false);
    expect(tcpClosed.count).toBe(0);
    carried.socket!.write("still");
    expect(await eventually(() => carried.text === "pingstill", 5000)).toBe(true);
    carried.socket!.end();
  }, 20_000);

  test("a bundle that drops the caller's root cuts its connections, carried TCP too, after a grace", async () => {
    const { listener, port, ends, tcpClosed } = listen(tlsOf(payments), 2000);
    const orders = await ordersFor(3_600_000);
    const carried = await client(port, orders, TCP_ALPN);
    carried.socket!.write("ping");
    expect(await eventually(() => carried.text === "ping", 5000)).toBe(true);

    // A new root, and the server's certificate under it: the old root is gone from the bundle.
    const nextRoot = await makeRoot({ trustDomain: TD });
    const nextInt = await makeIntermediate(nextRoot);
    const rotatedAt = Date.now();
    listener.rotate(tlsOf(await makeLeaf(nextInt, { uris: [PAYMENTS] }), nextInt, nextRoot.pem));
    expect(ends).toEqual(["trust-withdrawn"]);
    expect(await eventually(() => carried.closed && tcpClosed.count === 1, 15_000)).toBe(true);
    // Not before the grace (two seconds here, ten by default): what it carries may finish.
    expect(Date.now() - rotatedAt).toBeGreaterThanOrEqual(1_900);
    expect(ends).toEqual(["trust-withdrawn", "trust-withdrawn"]);
  }, 25_000);
});
