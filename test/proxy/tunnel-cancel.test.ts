/**
 * A connection that asked for a WebSocket is tunnelled to the outbound's loopback
 * Bun.serve. When the upgrade is refused there (by the service, or for no route), the
 * connection closes: a plain request the client sends behind it is never relayed, so
 * every plain request takes the raw listener's path, with its logs, spans and pool.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import type { Socket } from "bun";
import { MeshFixture, type EchoService } from "../helpers/mesh-fixture.ts";
import { eventually } from "../helpers/wait.ts";

const fx = new MeshFixture();
let service: EchoService;
let outbound = 0;
const relayed: string[] = [];

beforeAll(async () => {
  await fx.init();
  await fx.issue("orders");
  await fx.issue("slowpoke");
  service = fx.service((req) => {
    relayed.push(new URL(req.url).pathname);
    return new Response("no upgrades here\n", { status: 403 });
  });
  const inbound = await fx.proxy("slowpoke", service.url);
  const orders = await fx.proxy("orders", fx.echo("orders").url, fx.config("orders", { slowpoke: [inbound.ports.inbound] }));
  outbound = orders.ports.outbound;
});
afterAll(() => fx.close());

const UPGRADE = (host: string) =>
  `GET /ws HTTP/1.1\r\nHost: ${host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`;

test.each([
  ["the service refused it", "slowpoke", "HTTP/1.1 403 ", "refused the WebSocket upgrade with status 403\n"],
  ["no service has the name", "ledger", "HTTP/1.1 404 ", "no-route"],
])("a refused upgrade (%s) closes its connection; a request sent behind it is never relayed", async (_why, host, status, text) => {
  let received = "";
  let closed = false;
  const client: Socket<undefined> = await Bun.connect({
    hostname: "127.0.0.1",
    port: outbound,
    socket: { data: (_s, chunk) => void (received += chunk.toString("latin1")), close: () => void (closed = true) },
  });
  client.write(UPGRADE(host));
  expect(await eventually(() => received.includes(text), 5000)).toBe(true);
  expect(received.startsWith(status)).toBe(true);
  expect(received.toLowerCase()).toContain("connection: close");
  client.write(`GET /after-${host} HTTP/1.1\r\nHost: slowpoke\r\n\r\n`);
  expect(await eventually(() => closed, 5000)).toBe(true);
  expect(relayed.filter((p) => p.startsWith("/after"))).toEqual([]);
  client.terminate();
}, 15_000);
