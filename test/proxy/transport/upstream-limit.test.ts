/**
 * The process-wide limit on upstream connections (dial.ts): a dial past it fails at once
 * with ConnectError "limit", and every way a socket ends gives its place back, once.
 */
import { afterEach, expect, test } from "bun:test";
import { ConnectionBudget } from "../../../src/core/connection-budget.ts";
import { limitUpstreamConnections } from "../../../src/proxy/transport/dial.ts";
import { ConnectError, Http1Pool, proxyFailureOf } from "../../../src/proxy/transport/h1/index.ts";
import { makeRoot, makeLeaf, pemOf } from "../../helpers/certs.ts";

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0).reverse()) c();
  limitUpstreamConnections(undefined);
});

const get = (pool: Http1Pool, path: string) => pool.send({ method: "GET", pathAndQuery: path, headers: new Headers(), body: null });

test("a dial past the limit fails with reason limit (an overflow, not the endpoint's failure); a closed connection gives its place back", async () => {
  const budget = new ConnectionBudget(1);
  limitUpstreamConnections(budget);
  let release!: () => void;
  const held = new Promise<void>((resolve) => (release = resolve));
  const server = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: async (req) => (new URL(req.url).pathname === "/hold" ? (await held, new Response("held")) : new Response("ok")) });
  cleanups.push(() => server.stop(true));
  const pool = new Http1Pool({ host: "127.0.0.1", port: server.port!, connectTimeoutMs: 2000, idleTimeoutMs: 5000 });

  const first = get(pool, "/hold");
  const second = await get(pool, "/other").then(
    () => undefined,
    (err: Error) => err,
  );
  expect(second).toBeInstanceOf(ConnectError);
  expect((second as ConnectError).reason).toBe("limit");
  expect(second!.message).toContain("limit of 1 upstream connections");
  expect(proxyFailureOf(second)).toBe("overflow");
  expect(budget.inUse).toBe(1);

  release();
  expect(await (await first).text()).toBe("held");
  // The connection is pooled, idle: it still holds its place, and is reused.
  expect(await (await get(pool, "/again")).text()).toBe("ok");
  expect(budget.inUse).toBe(1);
  pool.close();
  for (let i = 0; i < 100 && budget.inUse > 0; i++) await Bun.sleep(10);
  expect(budget.inUse).toBe(0);
});

test("a refused connect and a connect timeout give their place back", async () => {
  const budget = new ConnectionBudget(4);
  limitUpstreamConnections(budget);
  const closed = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = closed.port;
  closed.stop(true);
  const refused = new Http1Pool({ host: "127.0.0.1", port, connectTimeoutMs: 2000, idleTimeoutMs: 5000 });
  cleanups.push(() => refused.close());
  for (let i = 0; i < 3; i++) expect(((await get(refused, "/").catch((e: Error) => e)) as ConnectError).reason).toBe("refused");
  expect(budget.inUse).toBe(0);

  // A TLS server that never answers the handshake: the dial times out, then the socket closes.
  const silent = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  cleanups.push(() => silent.stop(true));
  const root = await makeRoot({ trustDomain: "example.org" });
  const leaf = await makeLeaf(root, { uris: ["spiffe://example.org/ns/default/sa/orders"] });
  const tls = { cert: pemOf(leaf), key: leaf.keyPem, ca: root.pem, verifyPeer: () => undefined };
  const stalled = new Http1Pool({ host: "127.0.0.1", port: silent.port, connectTimeoutMs: 100, idleTimeoutMs: 5000, tls });
  cleanups.push(() => stalled.close());
  const timedOut = (await get(stalled, "/").catch((e: Error) => e)) as ConnectError;
  expect(timedOut.reason).toBe("timeout");
  for (let i = 0; i < 100 && budget.inUse > 0; i++) await Bun.sleep(10);
  expect(budget.inUse).toBe(0);
});
