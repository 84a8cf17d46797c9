/**
 * A connection that asked for a WebSocket is tunnelled to the outbound's loopback
 * Bun.serve for good; when the service refuses the upgrade, the client may go on with
 * plain requests on it, and those take that server's path, not the raw listener's. A
 * client that leaves before such a request's response head must stop the call there
 * too: the service sees its request aborted, instead of working on for nobody.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import type { Socket } from "bun";
import { MeshFixture, type EchoService } from "../helpers/mesh-fixture.ts";
import { eventually } from "../helpers/wait.ts";

const fx = new MeshFixture();
let service: EchoService;
let outbound = 0;
const slow = { started: 0, aborted: 0 };

beforeAll(async () => {
  await fx.init();
  await fx.issue("orders");
  await fx.issue("slowpoke");
  service = fx.service((req) => {
    if (new URL(req.url).pathname !== "/slow") return new Response("no upgrades here\n", { status: 403 });
    slow.started++;
    req.signal.addEventListener("abort", () => slow.aborted++, { once: true });
    return new Promise((resolve) => setTimeout(() => resolve(new Response("late\n")), 5000));
  });
  const inbound = await fx.proxy("slowpoke", service.url);
  const orders = await fx.proxy("orders", fx.echo("orders").url, fx.config("orders", { slowpoke: [inbound.ports.inbound] }));
  outbound = orders.ports.outbound;
});
afterAll(() => fx.close());

test("a client that leaves a tunnelled connection before the response head cancels the call to the service", async () => {
  let received = "";
  const client: Socket<undefined> = await Bun.connect({
    hostname: "127.0.0.1",
    port: outbound,
    socket: { data: (_s, chunk) => void (received += chunk.toString("latin1")) },
  });
  client.write(
    "GET /ws HTTP/1.1\r\nHost: slowpoke\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
  );
  expect(await eventually(() => received.includes("refused the WebSocket upgrade with status 403\n"), 5000)).toBe(true);
  expect(received.startsWith("HTTP/1.1 403 ")).toBe(true);

  client.write("GET /slow HTTP/1.1\r\nHost: slowpoke\r\n\r\n");
  expect(await eventually(() => slow.started === 1, 5000)).toBe(true);
  client.terminate();
  // Well before the service would have answered (5 s).
  expect(await eventually(() => slow.aborted === 1, 2500)).toBe(true);
}, 15_000);
