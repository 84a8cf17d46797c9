/**
 * A request header value with obs-text (bytes 0x80-0xFF, allowed by RFC 9110 and kept
 * as sent) crosses the pair byte for byte: each proxy writes the relayed head as latin1
 * bytes, never as UTF-8 text. The relayed head is checked for such bytes only when the
 * parser saw some (request-parse.ts `obsText`), so this is what keeps that shortcut honest.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { MeshFixture } from "../helpers/mesh-fixture.ts";
import { rawServer, type RawRequest, type RawServer } from "../helpers/raw-h1-server.ts";
import { rawExchange } from "../helpers/raw-http.ts";

const fx = new MeshFixture();
const seen: RawRequest[] = [];
let service: RawServer;
let outbound = 0;

beforeAll(async () => {
  await fx.init();
  await fx.issue("orders");
  await fx.issue("payments");
  service = rawServer((r) => {
    seen.push(r);
    r.reply("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
  });
  const payments = await fx.proxy("payments", `http://127.0.0.1:${service.port}`);
  const orders = await fx.proxy("orders", fx.echo("orders").url, fx.config("orders", { payments: [payments.ports.inbound] }));
  outbound = orders.ports.outbound;
});
afterAll(async () => {
  service.stop();
  await fx.close();
});

test("obs-text in a request header reaches the service as the same bytes, through both proxies", async () => {
  const value = Buffer.from([0x63, 0x61, 0x66, 0xe9, 0x20, 0xff, 0x80]); // "café", a space, 0xFF 0x80
  const request = Buffer.concat([Buffer.from("GET /o HTTP/1.1\r\nHost: payments\r\nX-Name: ", "latin1"), value, Buffer.from("\r\nX-Plain: yes\r\n\r\n", "latin1")]);
  const res = await rawExchange(request, { port: outbound, quietMs: 300 });
  expect(res.text.startsWith("HTTP/1.1 200 ")).toBe(true);
  // Names may arrive in either case: a head is relayed as received when nothing in it changes.
  const lines = seen.at(-1)!.head.split("\r\n");
  const field = (name: string) => lines.find((l) => l.toLowerCase().startsWith(`${name}:`));
  expect(field("x-name")).toBe(`X-Name: ${value.toString("latin1")}`);
  expect(field("x-plain")).toBe("X-Plain: yes");
  const head = lines.join("\r\n");
  // The inbound added the caller's identity after the fields it relayed.
  expect(head).toContain("spiffe://mesh.local/ns/default/sa/orders");
});
