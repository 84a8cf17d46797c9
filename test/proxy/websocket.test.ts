/**
 * WebSockets through the sidecar pair, as real processes on loopback: client →
 * outbound (Host: echo) → mTLS → inbound → a WebSocket service, with the caller's
 * proven identity on the upgrade, messages and close codes both ways, refusals
 * relayed, backpressure held end to end.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { rssMiB } from "../helpers/data-plane.ts";
import { MeshFixture, metricValue } from "../helpers/mesh-fixture.ts";
import { rawUpgrade, within, WsClient } from "../helpers/ws-client.ts";
import { wsService, type WsService } from "../helpers/ws-service.ts";

const ORDERS = "spiffe://mesh.local/ns/default/sa/orders";
const fx = new MeshFixture();
let svc: WsService;
let echoProxy: Awaited<ReturnType<MeshFixture["proxy"]>>;
let ordersProxy: Awaited<ReturnType<MeshFixture["proxy"]>>;

beforeAll(async () => {
  await fx.init();
  await fx.issue("orders");
  await fx.issue("echo");
  svc = wsService();
  echoProxy = await fx.proxy("echo", svc.url);
  ordersProxy = await fx.proxy("orders", fx.echo("orders").url, fx.config("orders", { echo: [echoProxy.ports.inbound] }));
});
afterAll(async () => {
  svc.stop();
  await fx.close();
});

/** A client of `echo` through the orders proxy, open and past the service's greeting. */
async function connect(path = "/chat", headers: Record<string, string> = {}, port = ordersProxy.ports.outbound) {
  const c = new WsClient(`ws://127.0.0.1:${port}${path}`, { headers: { host: "echo", ...headers } });
  expect(await within(c.opened, 10_000, "open")).toBe(true);
  const hello = await c.json<{ hello: boolean; caller: string | null; path: string; protocol: string | null }>();
  expect(hello.hello).toBe(true);
  return { c, hello };
}

async function untilTrue(check: () => boolean, ms = 5000): Promise<boolean> {
  for (const end = Date.now() + ms; Date.now() < end; await Bun.sleep(10)) if (check()) return true;
  return check();
}

describe("messages through the pair", () => {
  test("the service sees the caller's SPIFFE ID, and speaks first without losing a word", async () => {
    const { c, hello } = await connect("/who");
    expect(hello).toEqual({ hello: true, caller: ORDERS, path: "/who", protocol: null });
    c.ws.close(1000);
    await c.closedWithin();
  });

  test("a client-supplied x-mesh-client-id is not what the service sees, also when listed in Connection", async () => {
    const forged = "spiffe://mesh.local/ns/default/sa/admin";
    const { c, hello } = await connect("/forged", { "x-mesh-client-id": forged, "l5d-client-id": forged });
    expect(hello.caller).toBe(ORDERS);
    c.ws.close(1000);
    const raw = new WsClient(`ws://127.0.0.1:${ordersProxy.ports.outbound}/forged2`, { headers: { host: "echo", "x-mesh-client-id": forged, connection: "Upgrade, x-mesh-client-id" } });
    expect(await within(raw.opened, 10_000, "open")).toBe(true);
    expect((await raw.json()).caller).toBe(ORDERS);
    raw.ws.close(1000);
  });

  test("text and binary echo, types kept, including a 1 MB binary message", async () => {
    const { c } = await connect();
    c.ws.send("héllo ✓");
    expect(await c.next()).toBe("héllo ✓");
    const small = new Uint8Array([0, 1, 2, 255]);
    c.ws.send(small);
    const back = await c.next();
    expect(Buffer.isBuffer(back)).toBe(true);
    expect([...(back as Buffer)]).toEqual([0, 1, 2, 255]);
    const big = randomBytes(1 << 20);
    c.ws.send(big);
    const bigBack = (await c.next(15_000)) as Buffer;
    expect(bigBack.byteLength).toBe(1 << 20);
    expect(bigBack.equals(big)).toBe(true);
    c.ws.send("");
    expect(await c.next()).toBe("");
    c.ws.close(1000);
  });

  test("200 messages sent the moment the socket opens arrive in order", async () => {
    const c = new WsClient(`ws://127.0.0.1:${ordersProxy.ports.outbound}/burst`, { headers: { host: "echo" } });
    c.ws.addEventListener("open", () => {
      for (let i = 0; i < 200; i++) c.ws.send(`m${i}`);
    });
    expect((await c.json()).hello).toBe(true);
    const got: string[] = [];
    for (let i = 0; i < 200; i++) got.push(String(await c.next()));
    expect(got).toEqual(Array.from({ length: 200 }, (_, i) => `m${i}`));
    c.ws.close(1000);
  });

  test("the subprotocol is the one the service chose, not the client's first offer", async () => {
    const c = new WsClient(`ws://127.0.0.1:${ordersProxy.ports.outbound}/proto`, { headers: { host: "echo" }, protocols: ["chat.v1", "chat.v2"] });
    expect(await within(c.opened, 10_000, "open")).toBe(true);
    expect(c.ws.protocol).toBe("chat.v2");
    expect((await c.json()).protocol).toBe("chat.v2");
    c.ws.close(1000);
  });
});

describe("close codes", () => {
  test("client → service: code and reason arrive", async () => {
    const { c } = await connect("/client-closes");
    c.ws.close(4001, "client says bye");
    await c.closedWithin();
    expect(await untilTrue(() => svc.closes.some((s) => s.path === "/client-closes"))).toBe(true);
    expect(svc.closes.find((s) => s.path === "/client-closes")).toEqual({ path: "/client-closes", code: 4001, reason: "client says bye" });
  });

  test("service → client: code and reason arrive", async () => {
    const { c } = await connect("/service-closes");
    c.ws.send("close:4002:service says bye");
    expect(await c.closedWithin()).toEqual({ code: 4002, reason: "service says bye" });
  });

  test("a close without a code stays without one (1005) both ways", async () => {
    const { c } = await connect("/no-code");
    c.ws.close();
    await c.closedWithin();
    expect(await untilTrue(() => svc.closes.some((s) => s.path === "/no-code"))).toBe(true);
    expect(svc.closes.find((s) => s.path === "/no-code")?.code).toBe(1005);
    const other = await connect("/no-code-back");
    other.c.ws.send("close:1005:");
    expect((await other.c.closedWithin()).code).toBe(1005);
  });

  test("a client that vanishes (no Close frame) is seen as abnormal (1006) by the service", async () => {
    const { c } = await connect("/vanish");
    c.ws.terminate();
    expect(await untilTrue(() => svc.closes.some((s) => s.path === "/vanish"))).toBe(true);
    expect(svc.closes.find((s) => s.path === "/vanish")?.code).toBe(1006);
  });
});

describe("refusals", () => {
  for (const [path, status] of [["/deny", 403], ["/missing", 404]] as const) {
    test(`the service refusing the upgrade with ${status}: the client gets ${status}, not a hang`, async () => {
      const raw = await rawUpgrade(ordersProxy.ports.outbound, path, "echo");
      expect(raw.status).toBe(status);
      const c = new WsClient(`ws://127.0.0.1:${ordersProxy.ports.outbound}${path}`, { headers: { host: "echo" } });
      expect(await within(c.opened, 10_000, "handshake outcome")).toBe(false);
      expect((await c.closedWithin()).code).toBe(1006);
      expect(c.error).toContain(`${status}`);
    });
  }

  test("an unknown service gets 404 no-route", async () => {
    const raw = await rawUpgrade(ordersProxy.ports.outbound, "/", "nowhere");
    expect(raw.status).toBe(404);
    expect(raw.head.toLowerCase()).toContain("x-mesh-error: no-route");
  });

  test("a peer presenting another service's identity is refused (502 peer-identity); the service sees nothing", async () => {
    await fx.issue("inventory");
    const impostor = await fx.proxy("inventory", svc.url);
    const caller = await fx.proxy("orders", fx.echo("orders-misdirected").url, fx.config("misdirected", { echo: [impostor.ports.inbound] }));
    const before = svc.upgrades;
    const raw = await rawUpgrade(caller.ports.outbound, "/", "echo");
    expect(raw.status).toBe(502);
    expect(raw.head.toLowerCase()).toContain("x-mesh-error: peer-identity");
    const c = new WsClient(`ws://127.0.0.1:${caller.ports.outbound}/`, { headers: { host: "echo" } });
    expect(await within(c.opened, 10_000, "handshake outcome")).toBe(false);
    expect(svc.upgrades).toBe(before);
  });

  test("upgrades are counted by outcome", async () => {
    const admin = ordersProxy.ports.admin;
    expect(await metricValue(admin, "mesh_websocket_upgrades_total", { direction: "outbound", peer: "echo", status: "1xx" })).toBeGreaterThanOrEqual(8);
    expect(await metricValue(admin, "mesh_websocket_upgrades_total", { direction: "outbound", peer: "echo", status: "4xx" })).toBeGreaterThanOrEqual(4);
    expect(await metricValue(echoProxy.ports.admin, "mesh_websocket_upgrades_total", { direction: "inbound", peer: "orders", status: "1xx" })).toBeGreaterThanOrEqual(8);
  });
});

describe("backpressure", () => {
  test("32 MB from the service to a client that stops reading for a second: all of it, in order", async () => {
    const { c } = await connect("/flood");
    c.ws.pause();
    c.ws.send("flood:64:524288");
    await Bun.sleep(1000);
    c.ws.resume();
    for (let i = 0; i < 64; i++) {
      const m = (await c.next(15_000)) as Buffer;
      expect(m.byteLength).toBe(524288);
      expect(m.readUInt32BE(0)).toBe(i);
    }
    c.ws.close(1000);
  });

  test("a client sending 128 MB faster than the service reads is held back, not buffered by the proxies", async () => {
    const { c } = await connect("/count");
    const pids = [ordersProxy.proc.pid, echoProxy.proc.pid];
    const before = pids.map(rssMiB);
    c.ws.send("pause:3000");
    await Bun.sleep(50);
    const count = 256;
    for (let i = 0; i < count; i++) {
      const chunk = Buffer.alloc(512 << 10, i & 0xff);
      chunk.writeUInt32BE(i, 0);
      c.ws.send(chunk);
    }
    await Bun.sleep(1000);
    // Five loopback connections lie between client and service, and each receive buffer
    // autotunes up to tcp_rmem's max (32 MB here): the kernel may absorb most of the
    // 128 MB. What must hold: the client still waits with some of it, and neither proxy
    // grew by anything like what passed through it.
    expect(c.ws.bufferedAmount).toBeGreaterThan(8 << 20);
    const grew = pids.map((pid, i) => rssMiB(pid) - before[i]!);
    expect(Math.max(...grew)).toBeLessThan(48);
    c.ws.send("count");
    expect(await c.json(30_000)).toEqual({ received: count * (512 << 10), ordered: true });
    c.ws.close(1000);
  });
});

describe("destination policy applies to upgrades", () => {
  let configs = 0;
  function configWith(docs: string): string {
    const path = join(fx.tmp.path, `ws-policy-${++configs}.yaml`);
    writeFileSync(path, docs);
    return path;
  }
  const serviceDoc = (ports: number[], extra = "") =>
    `apiVersion: mesh.dev/v1alpha1\nkind: Service\nmetadata:\n  name: echo\nspec:\n  ports: [{name: http, port: 80}]\n${extra}  endpoints:\n` +
    ports.map((p) => `    - {address: 127.0.0.1, port: ${p}}\n`).join("");
  const policyDoc = (spec: string) => `---\napiVersion: mesh.dev/v1alpha1\nkind: DestinationPolicy\nmetadata:\n  name: echo\nspec:\n${spec}\n`;

  test("the balancer spreads sockets: round robin over two instances, 3 each of 6", async () => {
    const a = wsService();
    const b = wsService();
    try {
      const [pa, pb] = await Promise.all([fx.proxy("echo", a.url), fx.proxy("echo", b.url)]);
      const orders = await fx.proxy("orders", fx.echo("orders-rr").url, configWith(serviceDoc([pa.ports.inbound, pb.ports.inbound]) + policyDoc("  loadBalancer: {type: round-robin}")));
      const clients = [];
      for (let i = 0; i < 6; i++) clients.push((await connect("/rr", {}, orders.ports.outbound)).c);
      expect([a.upgrades, b.upgrades]).toEqual([3, 3]);
      for (const c of clients) c.ws.close(1000);
    } finally {
      a.stop();
      b.stop();
    }
  });

  test("the breaker's maxConnections caps open sockets (503 max-connections), and a closed one frees its slot", async () => {
    const orders = await fx.proxy("orders", fx.echo("orders-cb").url, configWith(serviceDoc([echoProxy.ports.inbound]) + policyDoc("  circuitBreaker: {maxConnections: 1}")));
    const first = await connect("/cb", {}, orders.ports.outbound);
    const refused = await rawUpgrade(orders.ports.outbound, "/cb", "echo");
    expect(refused.status).toBe(503);
    expect(refused.head.toLowerCase()).toContain("x-mesh-overflow: max-connections");
    first.c.ws.close(1000);
    await first.c.closedWithin();
    expect(await untilTrue(() => svc.closes.some((s) => s.path === "/cb"))).toBe(true);
    const again = await connect("/cb", {}, orders.ports.outbound);
    again.c.ws.close(1000);
  });

  test("an upstream that never answers the upgrade: 504 after the destination's request timeout", async () => {
    const stall = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    try {
      const stalled = await fx.proxy("echo", `http://127.0.0.1:${stall.port}`);
      const orders = await fx.proxy("orders", fx.echo("orders-stall").url, configWith(serviceDoc([stalled.ports.inbound]) + policyDoc("  timeouts: {request: 1s}")));
      const started = Date.now();
      const raw = await rawUpgrade(orders.ports.outbound, "/", "echo");
      expect(raw.status).toBe(504);
      expect(raw.head.toLowerCase()).toContain("x-mesh-error: timeout");
      expect(Date.now() - started).toBeLessThan(4_000);
    } finally {
      stall.stop(true);
    }
  });

  test("a service outside the mesh (mtls: false) is reached over plain ws://, with no identity claimed", async () => {
    const orders = await fx.proxy("orders", fx.echo("orders-plain").url, configWith(serviceDoc([svc.server.port!], "  mtls: false\n")));
    const { c, hello } = await connect("/plain", { "x-mesh-client-id": "spiffe://mesh.local/ns/default/sa/admin" }, orders.ports.outbound);
    expect(hello.caller).toBeNull();
    c.ws.send("plain");
    expect(await c.next()).toBe("plain");
    c.ws.close(1000);
  });
});

test("SIGTERM with a WebSocket open: the proxy says Going Away (1001) and exits 0 at once", async () => {
  const server = await fx.proxy("echo", svc.url, undefined, ["--drain-timeout", "2s"]);
  const client = await fx.proxy("orders", fx.echo("orders-drain").url, fx.config("drain", { echo: [server.ports.inbound] }));
  const { c } = await connect("/drain", {}, client.ports.outbound);
  const started = Date.now();
  server.proc.kill("SIGTERM");
  expect(await within(server.proc.exited, 10_000, "exit")).toBe(0);
  expect(Date.now() - started).toBeLessThan(2_000);
  expect((await c.closedWithin(10_000)).code).toBe(1001);
  client.proc.kill("SIGTERM");
  expect(await within(client.proc.exited, 10_000, "exit")).toBe(0);
});

describe("descriptors", () => {
  test("a WebSocket takes its four descriptors from the connection limit: past it the upgrade gets 503, plain requests still fit", async () => {
    // 6 places: one open WebSocket (its client connection and three more) leaves two.
    const small = await fx.proxy("orders", fx.echo("orders").url, fx.config("orders-small", { echo: [echoProxy.ports.inbound] }), ["--max-connections", "6"]);
    const first = await connect("/one", {}, small.ports.outbound);
    const refused = await rawUpgrade(small.ports.outbound, "/two", "echo");
    expect(refused.status).toBe(503);
    expect(refused.head).toContain("x-mesh-overflow: websockets");
    const plain = await fetch(`http://127.0.0.1:${small.ports.outbound}/plain`, { headers: { host: "echo" } });
    expect(plain.status).not.toBe(503);
    await plain.arrayBuffer();
    expect(await metricValue(small.ports.admin, "mesh_connections_refused_total", { direction: "outbound" })).toBe(1);
    // Closed, its places return: the next upgrade succeeds.
    first.c.ws.close(1000);
    await first.c.closedWithin();
    let status = 0;
    for (let i = 0; i < 50 && status !== 101; i++) {
      status = (await rawUpgrade(small.ports.outbound, "/again", "echo")).status;
      if (status !== 101) await Bun.sleep(20);
    }
    expect(status).toBe(101);
    small.proc.kill("SIGTERM");
    expect(await small.proc.exited).toBe(0);
  });
});
