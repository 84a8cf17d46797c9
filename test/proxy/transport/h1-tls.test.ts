/**
 * mTLS through the HTTP/1.1 client: the chain is verified against the trust bundle
 * (never an unverified chain, although Bun's hostname check must be tolerated for IP
 * endpoints with URI-SAN-only certificates), the server's SPIFFE ID is checked once per
 * connection, and a refused server never receives a byte of the request.
 */
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import type { Server } from "bun";
import { peerIdFromDer } from "../../../src/proxy/peer-identity.ts";
import { ConnectError, Http1Pool, PeerIdentityError, requestMayHaveBeenSent, type PoolOptions } from "../../../src/proxy/transport/h1/index.ts";
import { fromNow, makeIntermediate, makeLeaf, makeRoot, pemOf, type Issued } from "../../helpers/certs.ts";

const TD = "example.org";
const PAYMENTS = `spiffe://${TD}/ns/default/sa/payments`;
const ORDERS = `spiffe://${TD}/ns/default/sa/orders`;
const HOUR = 3600_000;

let root: Issued, int: Issued, payments: Issued, orders: Issued;
let otherRoot: Issued, otherInt: Issued;

beforeAll(async () => {
  root = await makeRoot({ trustDomain: TD });
  int = await makeIntermediate(root);
  payments = await makeLeaf(int, { uris: [PAYMENTS] });
  orders = await makeLeaf(int, { uris: [ORDERS] });
  otherRoot = await makeRoot({ trustDomain: TD });
  otherInt = await makeIntermediate(otherRoot);
});

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0).reverse()) c();
});
afterAll(() => {
  for (const c of cleanups.splice(0)) c();
});

/** The check the proxy makes: exactly the expected SPIFFE ID, read from the parsed leaf. */
function expectId(id: string, calls = { n: 0 }) {
  return (der: Uint8Array<ArrayBuffer>): Error | undefined => {
    calls.n++;
    const got = peerIdFromDer(der, TD);
    if (!got.ok) return new PeerIdentityError(`peer identity refused: ${got.reason}`);
    if (got.spiffeId !== id) return new PeerIdentityError(`peer is ${got.spiffeId}, expected ${id}`);
    return undefined;
  };
}

interface Upstream {
  server: Server<undefined>;
  /** Requests that reached the handler. */
  requests: number;
}

/** An mTLS upstream (strict: client certificate required) serving `leaf` with `chain` behind it. */
function upstream(leaf: Issued, chain: Issued[] = [int], fetch?: (req: Request) => Response | Promise<Response>): Upstream {
  const u: Upstream = { server: undefined as never, requests: 0 };
  u.server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    tls: { cert: pemOf(leaf, ...chain), key: leaf.keyPem, ca: root.pem, requestCert: true, rejectUnauthorized: true },
    maxRequestBodySize: 64 * 1024 * 1024,
    fetch(req) {
      u.requests++;
      return fetch ? fetch(req) : new Response(`hi from ${new URL(req.url).pathname}`);
    },
  });
  cleanups.push(() => u.server.stop(true));
  return u;
}

function mtlsPool(port: number, verifyPeer = expectId(PAYMENTS), client: { leaf: Issued; chain: Issued[] } = { leaf: orders, chain: [int] }, extra: Partial<PoolOptions> = {}) {
  const pool = new Http1Pool({
    host: "127.0.0.1",
    port,
    connectTimeoutMs: 2000,
    idleTimeoutMs: 5000,
    tls: { cert: pemOf(client.leaf, ...client.chain), key: client.leaf.keyPem, ca: root.pem, verifyPeer },
    ...extra,
  });
  cleanups.push(() => pool.close());
  return pool;
}

const get = (pool: Http1Pool, path = "/") => pool.send({ method: "GET", pathAndQuery: path, headers: new Headers(), body: null });

async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (err) {
    return err as Error;
  }
  throw new Error("expected a rejection");
}

describe("an accepted server", () => {
  test("requests flow; one handshake and one identity check per connection, not per request", async () => {
    const u = upstream(payments);
    const calls = { n: 0 };
    const pool = mtlsPool(u.server.port!, expectId(PAYMENTS, calls));
    for (let i = 0; i < 20; i++) expect(await (await get(pool, `/r${i}`)).text()).toBe(`hi from /r${i}`);
    expect(pool.stats).toMatchObject({ created: 1, handshakes: 1, reused: 19 });
    expect(calls.n).toBe(1);
  });

  test("concurrent requests: one handshake per connection", async () => {
    const u = upstream(payments, [int], async () => {
      await Bun.sleep(20);
      return new Response("slow");
    });
    const pool = mtlsPool(u.server.port!);
    await Promise.all(Array.from({ length: 4 }, async () => (await get(pool)).text()));
    expect(pool.stats).toMatchObject({ created: 4, handshakes: 4 });
    for (let i = 0; i < 10; i++) await (await get(pool)).text();
    expect(pool.stats).toMatchObject({ created: 4, handshakes: 4 });
  });

  test("5 MB up and down over mTLS, intact", async () => {
    const u = upstream(payments, [int], (req) => new Response(req.body));
    const pool = mtlsPool(u.server.port!);
    const data = new Uint8Array(5 * 1024 * 1024);
    for (let i = 0; i < data.length; i++) data[i] = (i * 7) % 256;
    for (const headers of [new Headers(), new Headers({ "content-length": String(data.length) })]) {
      const res = await pool.send({ method: "POST", pathAndQuery: "/echo", headers, body: new Blob([data]).stream() });
      expect(new Uint8Array(await res.arrayBuffer())).toEqual(data);
    }
    expect(pool.stats.handshakes).toBe(1);
  });
});

describe("refused servers never see the request", () => {
  test("a valid chain with another SPIFFE ID: PeerIdentityError from verifyPeer", async () => {
    const inventory = await makeLeaf(int, { uris: [`spiffe://${TD}/ns/default/sa/inventory`] });
    const u = upstream(inventory);
    const pool = mtlsPool(u.server.port!);
    const err = await rejection(get(pool));
    expect(err).toBeInstanceOf(PeerIdentityError);
    expect(err.message).toContain("expected spiffe://example.org/ns/default/sa/payments");
    expect(requestMayHaveBeenSent(err)).toBe(false);
    expect(pool.stats).toMatchObject({ open: 0, handshakes: 0 });
    await Bun.sleep(50);
    expect(u.requests).toBe(0);
  });

  test("a leaf with no URI SAN: refused by verifyPeer", async () => {
    const noId = await makeLeaf(int, { uris: [] });
    const u = upstream(noId);
    expect(await rejection(get(mtlsPool(u.server.port!)))).toBeInstanceOf(PeerIdentityError);
    expect(u.requests).toBe(0);
  });

  // Each is a chain error that Bun must report instead of (not behind) its hostname
  // mismatch: if an upgrade changes that, these fail rather than accept the chain.
  const chains: [string, string, () => Promise<{ leaf: Issued; chain: Issued[] }>][] = [
    ["from another CA", "UNABLE_TO_GET_ISSUER_CERT_LOCALLY", async () => ({ leaf: await makeLeaf(otherInt, { uris: [PAYMENTS] }), chain: [otherInt] })],
    ["expired", "CERT_HAS_EXPIRED", async () => ({ leaf: await makeLeaf(int, { uris: [PAYMENTS], notBefore: fromNow(-2 * HOUR), notAfter: fromNow(-HOUR) }), chain: [int] })],
    ["not yet valid", "CERT_NOT_YET_VALID", async () => ({ leaf: await makeLeaf(int, { uris: [PAYMENTS], notBefore: fromNow(HOUR), notAfter: fromNow(2 * HOUR) }), chain: [int] })],
    [
      "self-signed",
      "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
      async () => ({ leaf: await makeRoot({ trustDomain: TD, ca: false, keyUsages: ["digitalSignature"], uris: [PAYMENTS] }), chain: [] }),
    ],
    ["without its intermediate", "UNABLE_TO_VERIFY_LEAF_SIGNATURE", async () => ({ leaf: payments, chain: [] })],
    ["signed by a foreign intermediate, presented with ours", "UNABLE_TO_VERIFY_LEAF_SIGNATURE", async () => ({ leaf: await makeLeaf(otherInt, { uris: [PAYMENTS] }), chain: [int] })],
  ];
  for (const [name, code, make] of chains) {
    test(`a server certificate ${name}: refused (${code}), verifyPeer never asked`, async () => {
      const { leaf, chain } = await make();
      const u = upstream(leaf, chain);
      const calls = { n: 0 };
      const pool = mtlsPool(u.server.port!, expectId(PAYMENTS, calls));
      const err = await rejection(get(pool));
      expect(err).toBeInstanceOf(PeerIdentityError);
      expect(err.message).toContain(code);
      expect(calls.n).toBe(0);
      expect(pool.stats.handshakes).toBe(0);
      await Bun.sleep(50);
      expect(u.requests).toBe(0);
    });
  }

  test("100 connections to a server from another CA: every one refused", async () => {
    const leaf = await makeLeaf(otherInt, { uris: [PAYMENTS] });
    const u = upstream(leaf, [otherInt]);
    const pool = mtlsPool(u.server.port!);
    const errors = await Promise.all(Array.from({ length: 100 }, () => rejection(get(pool))));
    expect(errors.every((e) => e instanceof PeerIdentityError)).toBe(true);
    expect(u.requests).toBe(0);
  });
});

describe("the server refusing us, and handshake timeouts", () => {
  test("no client certificate: the server's alert fails the request; nothing reached the handler", async () => {
    const u = upstream(payments);
    const pool = new Http1Pool({
      host: "127.0.0.1",
      port: u.server.port!,
      connectTimeoutMs: 2000,
      idleTimeoutMs: 5000,
      // No client certificate at all (the type requires one; a sidecar always has one).
      tls: { ca: root.pem, verifyPeer: expectId(PAYMENTS) } as never,
    });
    cleanups.push(() => pool.close());
    const err = await rejection(get(pool));
    expect(["ConnectError", "ResetError"]).toContain(err.name);
    expect(u.requests).toBe(0);
  });

  test("an unusable TLS configuration: ConnectError, no timer left behind", async () => {
    const u = upstream(payments);
    const pool = mtlsPool(u.server.port!, expectId(PAYMENTS), { leaf: { ...orders, keyPem: "garbage" }, chain: [int] });
    const err = await rejection(get(pool));
    expect(err).toMatchObject({ name: "ConnectError", reason: "tls", requestSent: false });
    expect(pool.stats.open).toBe(0);
  });

  test("a pool without a trust bundle is refused at construction (Bun would fall back to public roots)", () => {
    expect(() => new Http1Pool({ host: "127.0.0.1", port: 1, connectTimeoutMs: 1, idleTimeoutMs: 1, tls: { cert: "", key: "", ca: "", verifyPeer: expectId(PAYMENTS) } })).toThrow(TypeError);
  });

  test("a client certificate from another CA: refused; nothing reached the handler", async () => {
    const stranger = await makeLeaf(otherInt, { uris: [ORDERS] });
    const u = upstream(payments);
    const err = await rejection(get(mtlsPool(u.server.port!, expectId(PAYMENTS), { leaf: stranger, chain: [otherInt] })));
    expect(["ConnectError", "ResetError"]).toContain(err.name);
    expect(u.requests).toBe(0);
  });

  test("a server that accepts TCP but never answers the ClientHello: connect timeout, nothing sent", async () => {
    const received: Buffer[] = [];
    const silent = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data: (_s, d) => void received.push(Buffer.from(d)) } });
    cleanups.push(() => silent.stop(true));
    const pool = mtlsPool(silent.port, expectId(PAYMENTS), undefined, { connectTimeoutMs: 200 });
    const started = performance.now();
    const err = await rejection(get(pool));
    const took = performance.now() - started;
    expect(err).toBeInstanceOf(ConnectError);
    expect(err).toMatchObject({ reason: "timeout", requestSent: false });
    expect(took).toBeGreaterThanOrEqual(190);
    expect(took).toBeLessThan(1500);
    const bytes = Buffer.concat(received);
    expect(bytes[0]).toBe(0x16); // a TLS handshake record: the ClientHello, and nothing else
    expect(bytes.toString("latin1")).not.toContain("GET");
    expect(pool.stats.open).toBe(0);
  });

  test("plain TCP to a server that never accepts the request's bytes in time is not a connect timeout", async () => {
    // Connect succeeds immediately for plain TCP; only the (caller's) request timeout applies.
    const silent = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    cleanups.push(() => silent.stop(true));
    const pool = new Http1Pool({ host: "127.0.0.1", port: silent.port, connectTimeoutMs: 50, idleTimeoutMs: 5000 });
    cleanups.push(() => pool.close());
    const err = await rejection(pool.send({ method: "GET", pathAndQuery: "/", headers: new Headers(), body: null, signal: AbortSignal.timeout(150) }));
    expect(err).toMatchObject({ name: "TimeoutError", requestSent: true });
  });
});

describe("the leaf's validity, checked on every connection", () => {
  // A resumed TLS session carries its first handshake's certificate and is held to no clock by the TLS layer.
  test("a leaf is refused once it has expired or before it starts, though its identity was read before", () => {
    const der = new Uint8Array(orders.x509.rawData);
    const { notBefore, notAfter } = orders.cert;
    expect(peerIdFromDer(der, TD, notAfter.getTime() - 1)).toMatchObject({ ok: true, spiffeId: ORDERS });
    expect(peerIdFromDer(der, TD, notAfter.getTime())).toEqual({ ok: false, reason: `peer certificate ${ORDERS} expired at ${notAfter.toISOString()}` });
    expect(peerIdFromDer(der, TD, notBefore.getTime() - 1)).toEqual({ ok: false, reason: `peer certificate ${ORDERS} is not valid before ${notBefore.toISOString()}` });
    expect(peerIdFromDer(der, TD)).toMatchObject({ ok: true, spiffeId: ORDERS });
  });
});
