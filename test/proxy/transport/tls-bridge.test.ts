/**
 * The TLS bridge without client certificates (the control plane's bootstrap port): any
 * TLS client is piped to the loopback server, within the connection limit; past it a
 * connection is closed at accept. With client certificates (the control plane's API port),
 * a connection lasts no longer than its peer's certificate; the rest of that mode is
 * covered end to end by the control plane's tests.
 */
import { expect, test } from "bun:test";
import type { Socket } from "bun";
import { ConnectionBudget } from "../../../src/core/connection-budget.ts";
import { TlsBridge } from "../../../src/proxy/transport/tls-bridge.ts";
import { fromNow, makeIntermediate, makeLeaf, makeRoot, pemOf } from "../../helpers/certs.ts";

test("without client certificates: a client with none is served through the bridge, and one past the limit is closed at accept", async () => {
  const root = await makeRoot({ trustDomain: "example.org" });
  const int = await makeIntermediate(root);
  const leaf = await makeLeaf(int, { uris: ["spiffe://example.org/ns/mesh/sa/control-plane"] });
  const inner = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: (req) => new Response(`hello ${new URL(req.url).pathname}`) });
  const budget = new ConnectionBudget(1);
  let overLimit = 0;
  const bridge = new TlsBridge(
    { cert: pemOf(leaf, int), key: leaf.keyPem, ca: root.pem, trustDomain: "example.org" },
    { onRefused: () => {}, onOpen: () => {}, onClose: () => {}, onOverLimit: () => overLimit++ },
    { budget, clientCertificates: false },
  );
  const port = bridge.listen("127.0.0.1", 0, inner.port!);
  const connect = async () => {
    let text = "";
    let closed!: () => void;
    let shook!: () => void;
    const done = new Promise<void>((resolve) => (closed = resolve));
    // Bun drops what a TLS client writes before its handshake completes.
    const handshake = new Promise<void>((resolve) => (shook = resolve));
    const socket: Socket<undefined> = await Bun.connect({
      hostname: "127.0.0.1",
      port,
      tls: { ca: root.pem, rejectUnauthorized: false },
      socket: { handshake: () => shook(), data: (_s, d) => void (text += d.toString("latin1")), close: () => closed(), error: () => closed() },
    });
    return { socket, text: () => text, closed: done, handshake };
  };
  const response = async (c: Awaited<ReturnType<typeof connect>>) => {
    for (let i = 0; i < 200 && !c.text().includes("hello"); i++) await Bun.sleep(10);
    return c.text();
  };
  try {
    const first = await connect();
    await first.handshake;
    first.socket.write("GET /one HTTP/1.1\r\nHost: cp\r\n\r\n");
    expect(await response(first)).toContain("hello /one");
    const second = await connect();
    await second.closed;
    expect(second.text()).toBe("");
    expect(overLimit).toBe(1);
    expect(bridge.refusedOverLimit).toBe(1);
    expect(bridge.identified).toBe(0);

    first.socket.end();
    await first.closed;
    for (let i = 0; i < 100 && budget.inUse > 0; i++) await Bun.sleep(10);
    const third = await connect();
    await third.handshake;
    third.socket.write("GET /three HTTP/1.1\r\nHost: cp\r\n\r\n");
    expect(await response(third)).toContain("hello /three");
    third.socket.end();
  } finally {
    bridge.closeAll();
    inner.stop(true);
  }
});

test("with client certificates: a kept-alive connection is cut when its peer's certificate ends, and its identity forgotten", async () => {
  const root = await makeRoot({ trustDomain: "example.org" });
  const int = await makeIntermediate(root);
  const server = await makeLeaf(int, { uris: ["spiffe://example.org/ns/mesh/sa/control-plane"] });
  const sidecar = await makeLeaf(int, { uris: ["spiffe://example.org/ns/default/sa/orders"], notAfter: fromNow(2500) });
  const bridge = new TlsBridge({ cert: pemOf(server, int), key: server.keyPem, ca: root.pem, trustDomain: "example.org" }, { onRefused: () => {}, onOpen: () => {}, onClose: () => {} });
  const inner = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: (req, srv) => new Response(`hello ${bridge.identityOf(srv.requestIP(req))}`) });
  const port = bridge.listen("127.0.0.1", 0, inner.port!);
  try {
    let text = "";
    let closed = false;
    let shook!: () => void;
    const handshake = new Promise<void>((resolve) => (shook = resolve));
    const socket: Socket<undefined> = await Bun.connect({
      hostname: "127.0.0.1",
      port,
      tls: { cert: pemOf(sidecar, int), key: sidecar.keyPem, ca: root.pem, rejectUnauthorized: false },
      socket: { handshake: () => shook(), data: (_s, d) => void (text += d.toString("latin1")), close: () => void (closed = true) },
    });
    await handshake;
    socket.write("GET /config HTTP/1.1\r\nHost: cp\r\n\r\n");
    for (let i = 0; i < 200 && !text.includes("hello"); i++) await Bun.sleep(10);
    expect(text).toContain("hello spiffe://example.org/ns/default/sa/orders");
    for (let i = 0; i < 500 && !closed; i++) await Bun.sleep(20);
    expect(closed).toBe(true);
    expect(Date.now()).toBeGreaterThanOrEqual(sidecar.cert.notAfter.getTime());
    expect(bridge.identified).toBe(0);
    expect(bridge.openLinks).toBe(0);
  } finally {
    bridge.closeAll();
    inner.stop(true);
  }
}, 20_000);
