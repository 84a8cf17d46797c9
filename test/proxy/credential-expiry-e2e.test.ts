/**
 * A caller whose certificate ends soon, against a real sidecar: an HTTP/2 connection is
 * told GOAWAY before the end and its call in flight still completes; a WebSocket is closed
 * with 1001 Going Away before the end; a carried TCP connection through the pair is cut
 * at the end; the sidecar counts them.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import http2, { type ServerHttp2Stream } from "node:http2";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Socket } from "bun";
import { mesh } from "../helpers/cli.ts";
import { MeshFixture, metricValue } from "../helpers/mesh-fixture.ts";
import { tcpEchoService, type TcpService } from "../helpers/tcp.ts";
import { eventually } from "../helpers/wait.ts";
import { WsClient } from "../helpers/ws-client.ts";
import { wsService } from "../helpers/ws-service.ts";

const fx = new MeshFixture();
let echo: TcpService;
let h2: http2.Http2Server;
/** Calls to /held wait until the test lets them answer. */
const held: ServerHttp2Stream[] = [];
let payments: Awaited<ReturnType<typeof fx.proxy>>;

/** Orders' certificate, ending `ttl` from now (as `mesh ca issue --ttl` writes it). */
async function shortLivedOrders(ttl: string): Promise<{ dir: string; notAfter: number }> {
  const dir = join(fx.tmp.path, "certs", "orders");
  const r = await mesh("ca", "issue", "--service", "orders", "--ca-dir", fx.ca, "--out", dir, "--force", "--ttl", ttl);
  if (r.code !== 0) throw new Error(r.err);
  const until = /valid until (\S+)/.exec(r.out)?.[1];
  return { dir, notAfter: Date.parse(until!) };
}

beforeAll(async () => {
  await fx.init();
  await fx.issue("payments");
  echo = tcpEchoService();
  h2 = http2.createServer();
  h2.on("stream", (stream: ServerHttp2Stream, headers) => {
    stream.on("error", () => {});
    if (headers[":path"] === "/held") return void held.push(stream);
    stream.respond({ ":status": 200 });
    stream.end("ok");
  });
  const h2Port = await new Promise<number>((resolve) => h2.listen(0, "127.0.0.1", () => resolve((h2.address() as { port: number }).port)));
  const config = join(fx.tmp.path, "payments.yaml");
  writeFileSync(config, `apiVersion: mesh.dev/v1alpha1\nkind: Service\nmetadata:\n  name: payments\nspec:\n  ports:\n    - {name: http, port: 80}\n    - {name: pg, port: 5432, protocol: tcp, targetPort: ${echo.port}}\n`);
  payments = await fx.proxy("payments", `http://127.0.0.1:${h2Port}`, config);
});
afterAll(async () => {
  for (const s of held) s.close();
  h2?.close();
  echo?.stop();
  await fx.close();
});

test("an HTTP/2 caller hears GOAWAY before its certificate ends, and its call in flight completes", async () => {
  const { dir, notAfter } = await shortLivedOrders("8s");
  const creds = { cert: readFileSync(join(dir, "chain.pem"), "utf8"), key: readFileSync(join(dir, "key.pem"), "utf8"), ca: readFileSync(join(dir, "bundle.pem"), "utf8") };
  const session = http2.connect(`https://127.0.0.1:${payments.ports.inbound}`, { ...creds, rejectUnauthorized: true, checkServerIdentity: () => undefined });
  session.on("error", () => {});
  let goaway = 0;
  let closed = false;
  session.on("goaway", () => void (goaway = Date.now()));
  session.on("close", () => void (closed = true));
  try {
    const call = session.request({ ":path": "/held", ":method": "GET", ":authority": "payments" });
    const answer = new Promise<{ status: number; body: string }>((resolve, reject) => {
      let status = 0;
      let body = "";
      call.on("response", (h) => void (status = Number(h[":status"])));
      call.on("data", (d) => void (body += d));
      call.on("end", () => resolve({ status, body }));
      call.on("error", reject);
    });
    call.end();
    expect(await eventually(() => held.length === 1, 5000)).toBe(true);
    expect(await eventually(() => goaway > 0, 10_000)).toBe(true);
    expect(goaway).toBeLessThan(notAfter);
    // The call opened before GOAWAY is still served, and then the session ends.
    expect(closed).toBe(false);
    const stream = held.shift()!;
    stream.respond({ ":status": 200 });
    stream.end("late");
    expect(await answer).toEqual({ status: 200, body: "late" });
    expect(await eventually(() => closed, 5000)).toBe(true);
    expect(await metricValue(payments.ports.admin, "mesh_connections_retired_total", { reason: "certificate-expiring" })).toBeGreaterThanOrEqual(1);
  } finally {
    session.destroy();
  }
}, 20_000);

test("a carried TCP connection through the pair is cut when its caller's certificate ends", async () => {
  const { notAfter } = await shortLivedOrders("6s");
  const config = join(fx.tmp.path, "orders.yaml");
  writeFileSync(config, `apiVersion: mesh.dev/v1alpha1\nkind: Service\nmetadata:\n  name: payments\nspec:\n  ports:\n    - {name: pg, port: 5432, protocol: tcp, targetPort: ${echo.port}}\n  endpoints:\n    - {address: 127.0.0.1, port: ${payments.ports.inbound}}\n`);
  const orders = await fx.proxy("orders", fx.echo("orders").url, config, ["--tcp-upstream", "payments:5432=127.0.0.1:0"]);
  const port = (orders.ready as { tcp: number[] }).tcp[0]!;
  const state = { text: "", closed: false };
  const socket: Socket<undefined> = await Bun.connect<undefined>({
    hostname: "127.0.0.1",
    port,
    socket: { data: (_s, d) => void (state.text += d.toString()), close: () => void (state.closed = true) },
  });
  socket.write("ping");
  expect(await eventually(() => state.text === "ping", 5000)).toBe(true);
  expect(await eventually(() => state.closed, 15_000)).toBe(true);
  expect(Date.now()).toBeGreaterThanOrEqual(notAfter);
  expect(await metricValue(payments.ports.admin, "mesh_connections_retired_total", { reason: "certificate-expired" })).toBeGreaterThanOrEqual(1);
}, 30_000);

test("a WebSocket is closed with 1001 before its caller's certificate ends, on both sides", async () => {
  const ws = wsService();
  try {
    const sidecar = await fx.proxy("payments", ws.url);
    const { dir, notAfter } = await shortLivedOrders("8s");
    const tls = { cert: readFileSync(join(dir, "chain.pem"), "utf8"), key: readFileSync(join(dir, "key.pem"), "utf8"), ca: readFileSync(join(dir, "bundle.pem"), "utf8"), rejectUnauthorized: false };
    const client = new WsClient(`wss://127.0.0.1:${sidecar.ports.inbound}/chat`, { tls });
    expect(await client.opened).toBe(true);
    expect(await client.json()).toMatchObject({ hello: true, caller: "spiffe://mesh.local/ns/default/sa/orders" });
    const closed = await client.closed;
    expect(Date.now()).toBeLessThan(notAfter);
    expect(closed).toEqual({ code: 1001, reason: "mesh: the caller's certificate is ending; connect again" });
    expect(await eventually(() => ws.closes.length === 1, 5000)).toBe(true);
    expect(ws.closes[0]).toMatchObject({ code: 1001 });
  } finally {
    ws.stop();
  }
}, 20_000);
