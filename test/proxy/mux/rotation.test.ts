/**
 * A certificate rotation on the inbound listener moves mux sessions to the new
 * certificate: under steady traffic a session never goes idle, so without GOAWAY it would
 * keep the old certificate until it expired. In-process: the real listener and the real
 * pooled client, over loopback mTLS.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { H1Listener, type ListenerTls } from "../../../src/proxy/transport/h1-server/listener.ts";
import { makeIntermediate, makeLeaf, makeRoot, pemOf, type Issued } from "../../helpers/certs.ts";
import { muxPool } from "../../helpers/mux-pool.ts";

const TD = "example.org";
const PAYMENTS = `spiffe://${TD}/ns/default/sa/payments`;
const ORDERS = `spiffe://${TD}/ns/default/sa/orders`;

let root: Issued, int: Issued, paymentsOld: Issued, paymentsNew: Issued, orders: Issued;
const cleanups: (() => void)[] = [];

beforeAll(async () => {
  root = await makeRoot({ trustDomain: TD });
  int = await makeIntermediate(root);
  paymentsOld = await makeLeaf(int, { uris: [PAYMENTS] });
  paymentsNew = await makeLeaf(int, { uris: [PAYMENTS] });
  orders = await makeLeaf(int, { uris: [ORDERS] });
});
afterAll(() => {
  for (const c of cleanups.splice(0).reverse()) c();
});

const tlsOf = (leaf: Issued): ListenerTls => ({ cert: pemOf(leaf, int), key: leaf.keyPem, ca: root.pem, trustDomain: TD, notAfterMs: leaf.cert.notAfter.getTime() });

test("rotation: the session in use hears GOAWAY, requests go on a new session served with the new certificate, none fails", async () => {
  let inflight = 0;
  let opened = 0;
  const listener = new H1Listener({
    hostname: "127.0.0.1",
    port: 0,
    tls: tlsOf(paymentsOld),
    limits: { maxBodyBytes: 1 << 20, idleTimeoutS: 30 },
    events: { onRefused: () => {}, onOpen: () => opened++ },
    handler: {
      refused: () => {},
      upgrade: () => {},
      request(req, res) {
        inflight++;
        // Slow enough that requests are in flight when the rotation lands.
        setTimeout(() => {
          inflight--;
          res.respond(200, { "content-type": "text/plain" }, `hi ${req.peer}`);
        }, 20);
      },
    },
  });
  const port = listener.listen();
  cleanups.push(() => listener.closeAll());

  // The serial of the server certificate each handshake saw.
  const served: string[] = [];
  const pool = muxPool(port, { leaf: orders, issuer: int, root }, PAYMENTS, TD, (der) => served.push(Buffer.from(der).toString("base64")), 5000);
  cleanups.push(() => pool.close());
  const get = async (i: number) => {
    const res = await pool.send({ method: "GET", pathAndQuery: `/r${i}`, headers: new Headers(), body: null });
    return `${res.status} ${await res.text()}`;
  };

  // Steady concurrent traffic across the rotation, bounded by count and time.
  const results: string[] = [];
  let rotated = false;
  const until = Date.now() + 5000;
  const worker = async (w: number) => {
    for (let i = 0; i < 400 && Date.now() < until; i++) {
      results.push(await get(w * 1000 + i).catch((e: Error) => `error ${e.message}`));
      if (rotated && served.length >= 2 && i > 0 && results.length > 200) break;
    }
  };
  const workers = Array.from({ length: 8 }, (_, w) => worker(w));
  // Rotate once traffic flows and requests are in flight.
  const start = Date.now();
  while ((results.length < 20 || inflight === 0) && Date.now() - start < 3000) await Bun.sleep(5);
  expect(results.filter((r) => r !== `200 hi ${ORDERS}`)).toEqual([]);
  expect(inflight).toBeGreaterThan(0);
  listener.rotate(tlsOf(paymentsNew));
  rotated = true;
  await Promise.all(workers);

  expect(results.filter((r) => r !== `200 hi ${ORDERS}`)).toEqual([]);
  // One session before the rotation, and one after it, with the new certificate.
  const oldDer = Buffer.from(paymentsOld.cert.der).toString("base64");
  const newDer = Buffer.from(paymentsNew.cert.der).toString("base64");
  expect(served[0]).toBe(oldDer);
  expect(served.slice(1)).toContain(newDer);
  expect(opened).toBeGreaterThanOrEqual(2);
  // The old session ends once its streams have: only the new one is open.
  const deadline = Date.now() + 5000;
  while (listener.openConnections > 1 && Date.now() < deadline) await Bun.sleep(50);
  expect(listener.openConnections).toBe(1);
}, 20_000);
