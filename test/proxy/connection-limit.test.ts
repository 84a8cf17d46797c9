/**
 * The listeners' connection limit. Past it a new connection is closed at accept, so a
 * flood never drives accept() into EMFILE, where Bun 1.4.5 would spin a whole core until
 * a descriptor is freed. In-process: the real listener, plain and mTLS. As a process:
 * `mesh proxy` under a 256-descriptor limit, flooded with 600 connections.
 */
import { beforeAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import type { Socket } from "bun";
import { ConnectionBudget } from "../../src/core/connection-budget.ts";
import { H1Listener, type ListenerTls } from "../../src/proxy/transport/h1-server/listener.ts";
import type { ConnectionHandler } from "../../src/proxy/transport/h1-server/connection.ts";
import { makeIntermediate, makeLeaf, makeRoot, pemOf, type Issued } from "../helpers/certs.ts";
import { fixtureFor, metricValue } from "../helpers/mesh-fixture.ts";

const GET = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
const ok: ConnectionHandler = { request: (_req, res) => res.respond(200, { "content-type": "text/plain" }, "ok"), refused: () => {}, upgrade: () => {} };

interface Client {
  socket: Socket<undefined>;
  text: () => string;
  closed: Promise<void>;
  handshook: () => boolean;
}

async function connect(port: number, tls?: { cert: string; key: string; ca: string }): Promise<Client> {
  let text = "";
  let handshook = false;
  let closed!: () => void;
  const done = new Promise<void>((resolve) => (closed = resolve));
  const socket = await Bun.connect({
    hostname: "127.0.0.1",
    port,
    tls: tls ? { ...tls, rejectUnauthorized: false } : undefined,
    socket: {
      data: (_s, d) => void (text += d.toString("latin1")),
      // The server's certificate names a SPIFFE ID, not 127.0.0.1: only that check may fail (as in dial.ts).
      handshake: (_s, success, err) => void (handshook = success || (err as { code?: string } | null)?.code === "ERR_TLS_CERT_ALTNAME_INVALID"),
      close: () => closed(),
      error: () => closed(),
    },
  });
  return { socket, text: () => text, closed: done, handshook: () => handshook };
}

const answered = async (c: Client) => {
  for (let i = 0; i < 100 && !c.text().includes("\r\n\r\n"); i++) await Bun.sleep(10);
  return c.text();
};

describe("the listener at its limit", () => {
  test("plain: the connection past the limit is answered 503 overflow and closed; a freed place is taken again", async () => {
    const budget = new ConnectionBudget(2);
    const listener = new H1Listener({ hostname: "127.0.0.1", port: 0, limits: { maxBodyBytes: 1024, idleTimeoutS: 30 }, handler: ok, events: { onRefused: () => {}, onOpen: () => {} }, budget });
    const port = listener.listen();
    try {
      const a = await connect(port);
      const b = await connect(port);
      const c = await connect(port);
      await c.closed;
      expect(c.text()).toStartWith("HTTP/1.1 503 ");
      expect(c.text()).toContain("x-mesh-error: overflow");
      expect(c.text()).toContain("limit of 2 connections");
      expect(listener.refusedOverLimit).toBe(1);
      a.socket.write(GET);
      b.socket.write(GET);
      expect(await answered(a)).toStartWith("HTTP/1.1 200 ");
      expect(await answered(b)).toStartWith("HTTP/1.1 200 ");
      expect(budget.inUse).toBe(2);

      a.socket.end();
      await a.closed;
      for (let i = 0; i < 100 && budget.inUse > 1; i++) await Bun.sleep(10);
      expect(budget.inUse).toBe(1);
      const d = await connect(port);
      d.socket.write(GET);
      expect(await answered(d)).toStartWith("HTTP/1.1 200 ");
      expect(listener.refusedOverLimit).toBe(1);
      b.socket.end();
      d.socket.end();
    } finally {
      listener.closeAll();
    }
  });

  let root: Issued, int: Issued, server: Issued, client: Issued;
  beforeAll(async () => {
    root = await makeRoot({ trustDomain: "example.org" });
    int = await makeIntermediate(root);
    server = await makeLeaf(int, { uris: ["spiffe://example.org/ns/default/sa/payments"] });
    client = await makeLeaf(int, { uris: ["spiffe://example.org/ns/default/sa/orders"] });
  });

  test("mTLS: the connection past the limit is closed before any handshake; the one within it is served", async () => {
    const tls: ListenerTls = { cert: pemOf(server, int), key: server.keyPem, ca: root.pem, trustDomain: "example.org", notAfterMs: server.cert.notAfter.getTime() };
    const budget = new ConnectionBudget(1);
    let overLimit = 0;
    const listener = new H1Listener({
      hostname: "127.0.0.1",
      port: 0,
      tls,
      limits: { maxBodyBytes: 1024, idleTimeoutS: 30 },
      handler: ok,
      events: { onRefused: () => {}, onOpen: () => {}, onOverLimit: () => overLimit++ },
      budget,
    });
    const port = listener.listen();
    const clientTls = { cert: pemOf(client, int), key: client.keyPem, ca: root.pem };
    try {
      const a = await connect(port, clientTls);
      for (let i = 0; i < 100 && !a.handshook(); i++) await Bun.sleep(10);
      expect(a.handshook()).toBe(true);
      const b = await connect(port, clientTls);
      await b.closed;
      expect(b.handshook()).toBe(false);
      expect(b.text()).toBe("");
      expect(overLimit).toBe(1);
      a.socket.write(GET);
      expect(await answered(a)).toStartWith("HTTP/1.1 200 ");
      a.socket.end();
    } finally {
      listener.closeAll();
    }
  });
});

describe("mesh proxy", () => {
  const fx = fixtureFor("orders");

  /** CPU seconds (user + system) the process has used so far. */
  const cpuSeconds = (pid: number) => {
    const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
    return (Number(fields[11]) + Number(fields[12])) / 100;
  };

  test("ProxyConfig.maxConnections sets the limit, and --max-connections overrides it", async () => {
    const svc = fx.echo("orders-limit");
    const proxyConfig = (limit: number) =>
      fx.config(`limit-${limit}`, {}, `apiVersion: mesh.dev/v1alpha1\nkind: ProxyConfig\nmetadata: { name: orders }\nspec:\n  upstream: ${svc.url}\n  maxConnections: ${limit}\n`);
    const refusedAfter = async (outbound: number, open: number) => {
      const held: Client[] = [];
      for (let i = 0; i < open; i++) held.push(await connect(outbound));
      const extra = await connect(outbound);
      await extra.closed;
      for (const c of held) c.socket.end();
      return extra.text();
    };
    const fromFile = await fx.proxy("orders", svc.url, proxyConfig(2));
    expect(await refusedAfter(fromFile.ports.outbound, 2)).toContain("limit of 2 connections");
    const fromFlag = await fx.proxy("orders", svc.url, proxyConfig(2), ["--max-connections", "3"]);
    expect(await refusedAfter(fromFlag.ports.outbound, 3)).toContain("limit of 3 connections");
  });

  test("under a 256-descriptor limit, upstream connections stop at 0.4 of it: the rest are answered 503 upstream-connections, the endpoint is not blamed", async () => {
    let held = 0;
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const slow = fx.service(async () => {
      held++;
      await gate;
      return new Response("done");
    });
    const plain = `apiVersion: mesh.dev/v1alpha1\nkind: Service\nmetadata: { name: payments }\nspec:\n  ports: [{ name: http, port: 80 }]\n  endpoints: [{ address: 127.0.0.1, port: ${slow.server.port} }]\n  mtls: false\n`;
    const p = await fx.proxy("orders", slow.url, fx.config("upstream-limit", {}, plain), [], { wrap: ["sh", "-c", 'ulimit -n 256 && exec "$@"', "sh"] });
    const { outbound, admin } = p.ports;
    // 110 callers, each on its own connection (the listeners take 128): 102 upstream places.
    const calls = Array.from({ length: 110 }, (_, i) => fetch(`http://127.0.0.1:${outbound}/c${i}`, { headers: { host: "payments", connection: "close" } }));
    for (let i = 0; i < 200 && held < 102; i++) await Bun.sleep(20);
    await Bun.sleep(300);
    expect(held).toBe(102);
    const cpu0 = cpuSeconds(p.proc.pid);
    await Bun.sleep(1000);
    expect(cpuSeconds(p.proc.pid) - cpu0).toBeLessThan(0.3);
    release();
    const responses = await Promise.all(calls);
    const overflow = responses.filter((r) => r.status === 503);
    expect(responses.filter((r) => r.status === 200).length).toBe(102);
    expect(overflow.length).toBe(8);
    expect(overflow.every((r) => r.headers.get("x-mesh-error") === "overflow" && r.headers.get("x-mesh-overflow") === "upstream-connections")).toBe(true);
    expect(await overflow[0]!.text()).toContain("limit of 102 upstream connections");
    expect(await metricValue(admin, "mesh_outlier_ejections_total")).toBe(0);
    const after = await fetch(`http://127.0.0.1:${outbound}/after`, { headers: { host: "payments" } });
    expect(after.status).toBe(200);
  }, 30_000);


  test("under a 256-descriptor limit, a flood of 600 connections is closed at accept past half of it: the proxy stays idle, counts them, and serves once it ends", async () => {
    const svc = fx.echo("orders-svc");
    const plain = `apiVersion: mesh.dev/v1alpha1\nkind: Service\nmetadata: { name: payments }\nspec:\n  ports: [{ name: http, port: 80 }]\n  endpoints: [{ address: 127.0.0.1, port: ${svc.server.port} }]\n  mtls: false\n`;
    const config = fx.config("flood", {}, plain);
    const p = await fx.proxy("orders", svc.url, config, [], { wrap: ["sh", "-c", 'ulimit -n 256 && exec "$@"', "sh"] });
    const { outbound, admin } = p.ports;
    const flood: Client[] = [];
    for (let i = 0; i < 600; i++) flood.push(await connect(outbound));
    await Bun.sleep(300);
    // Held: the 128 within the limit (half of 256). Every other one was closed at once.
    const cpu0 = cpuSeconds(p.proc.pid);
    await Bun.sleep(2000);
    const spent = cpuSeconds(p.proc.pid) - cpu0;
    // Accepting into EMFILE would spin: ~2 s of CPU in these 2 s.
    expect(spent).toBeLessThan(0.5);
    const held = flood.filter((c) => c.text() === "").length;
    expect(held).toBe(128);
    expect(flood.filter((c) => c.text().startsWith("HTTP/1.1 503 ")).length).toBe(600 - 128);
    for (const c of flood) c.socket.end();
    await Promise.all(flood.map((c) => c.closed));
    expect(await metricValue(admin, "mesh_connections_refused_total", { direction: "outbound" })).toBe(600 - 128);
    const res = await fetch(`http://127.0.0.1:${outbound}/after`, { headers: { host: "payments" } });
    expect(res.status).toBe(200);
    expect(((await res.json()) as { path: string }).path).toBe("/after");
  }, 30_000);
});
