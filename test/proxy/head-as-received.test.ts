/**
 * The outbound sends a request head as the client sent it when rebuilding it would only
 * change letter case and field order (request-head.ts asReceived), and a whole response
 * as the service sent it when the relayed head would say the same (relay-head.ts
 * sendableAsReceived); any head with something to drop or add is rebuilt. Checked
 * between a raw client and a plain service outside the mesh (mtls: false), each of
 * which sees exactly what the outbound wrote.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { MeshFixture, metricValue } from "../helpers/mesh-fixture.ts";
import { rawServer, type RawRequest, type RawServer } from "../helpers/raw-h1-server.ts";
import { rawExchange } from "../helpers/raw-http.ts";

const fx = new MeshFixture();
/** What the service answers, by request target. */
const RESPONSES: Record<string, string> = {
  "/plain": "HTTP/1.1 200 OK\r\nX-B: 1\r\nContent-Length: 5\r\nx-c: caf\xe9\r\n\r\nhello",
  "/zeros": "HTTP/1.1 200 OK\r\nContent-Length: 005\r\nX-B: 1\r\n\r\nhello",
  "/hop": "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nKeep-Alive: timeout=5\r\nX-Mesh-Client-Id: spiffe://evil/ns/x/sa/y\r\n\r\nhello",
  "/old": "HTTP/1.0 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhello",
};
let service: RawServer;
let outbound = 0;
let admin = 0;
/** A port nothing listens on: the first endpoint of "flaky", so its requests are retried on the second. */
let deadPort = 0;

beforeAll(async () => {
  await fx.init();
  await fx.issue("orders");
  service = rawServer((r) => {
    const canned = RESPONSES[r.head.slice(r.head.indexOf(" ") + 1, r.head.indexOf(" HTTP/"))];
    r.reply(canned ?? `HTTP/1.1 200 OK\r\ncontent-length: ${r.body.length}\r\n\r\n${r.body.toString("latin1")}`);
  });
  const gone = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  deadPort = gone.port;
  gone.stop(true);
  const doc = (name: string, ports: number[], policy = "") =>
    `apiVersion: mesh.dev/v1alpha1\nkind: Service\nmetadata:\n  name: ${name}\nspec:\n  ports: [{name: http, port: 80}]\n  mtls: false\n  endpoints:\n` +
    ports.map((p) => `    - {address: 127.0.0.1, port: ${p}}\n`).join("") +
    policy;
  const config = join(fx.tmp.path, "as-received.yaml");
  const policy = `---\napiVersion: mesh.dev/v1alpha1\nkind: DestinationPolicy\nmetadata:\n  name: flaky\nspec:\n  loadBalancer: {type: round-robin}\n`;
  writeFileSync(config, [doc("legacy", [service.port]), doc("flaky", [deadPort, service.port]) + policy].join("---\n"));
  ({ outbound, admin } = (await fx.proxy("orders", fx.echo("orders").url, config)).ports);
});
afterAll(async () => {
  service.stop();
  await fx.close();
});

/** Sends `bytes` to the outbound; returns what the service saw of each request, and the client's reply. */
async function through(bytes: string): Promise<{ seen: RawRequest[]; reply: string }> {
  const before = service.requests.length;
  const res = await rawExchange(bytes, { port: outbound, quietMs: 300 });
  return { seen: service.requests.slice(before), reply: res.text };
}

test("a head with nothing to drop or add reaches the service byte for byte", async () => {
  const head = "GET /a?b=1 HTTP/1.1\r\nHost: legacy\r\nAccept: */*\r\nX-Name: caf\xe9\r\n\r\n";
  const { seen, reply } = await through(head);
  expect(reply.startsWith("HTTP/1.1 200 ")).toBe(true);
  expect(seen.map((r) => r.head)).toEqual([head]);
});

test("a POST with its plain Content-Length goes as received, its body with it", async () => {
  const head = "POST /p HTTP/1.1\r\nContent-Length: 5\r\nhost: legacy\r\n\r\n";
  const { seen, reply } = await through(`${head}hello`);
  expect(reply).toEndWith("\r\n\r\nhello");
  expect(seen.map((r) => [r.head, r.body.toString()])).toEqual([[head, "hello"]]);
});

test("after leading empty lines, the head goes as received without them", async () => {
  const head = "DELETE /d HTTP/1.1\r\nX-A: 1\r\nhost: legacy\r\n\r\n";
  const { seen } = await through(`\r\n\r\n${head}`);
  expect(seen.map((r) => r.head)).toEqual([head]);
});

test("heads with something to drop, add or frame are rebuilt: hop-by-hop, identity, a length with leading zeros, Expect, HTTP/1.0, absolute-form, a POST without length", async () => {
  const cases: [string, string][] = [
    ["GET /k HTTP/1.1\r\nHost: legacy\r\nConnection: keep-alive\r\n\r\n", "GET /k HTTP/1.1\r\nhost: legacy\r\n\r\n"],
    ["GET /i HTTP/1.1\r\nHost: legacy\r\nX-Mesh-Client-Id: spiffe://mesh.local/ns/default/sa/admin\r\n\r\n", "GET /i HTTP/1.1\r\nhost: legacy\r\n\r\n"],
    ["GET /t HTTP/1.1\r\nHost: legacy\r\nTE: trailers\r\nX-A: 1\r\n\r\n", "GET /t HTTP/1.1\r\nhost: legacy\r\nx-a: 1\r\n\r\n"],
    ["POST /p HTTP/1.1\r\nContent-Length: 005\r\nHost: legacy\r\n\r\nhello", "POST /p HTTP/1.1\r\nhost: legacy\r\ncontent-length: 5\r\n\r\n"],
    ["POST /e HTTP/1.1\r\nHost: legacy\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\nhi", "POST /e HTTP/1.1\r\nhost: legacy\r\ncontent-length: 2\r\n\r\n"],
    ["GET /c HTTP/1.1\r\nHost: legacy\r\nContent-Length: 0\r\n\r\n", "GET /c HTTP/1.1\r\nhost: legacy\r\n\r\n"],
    ["GET /z HTTP/1.0\r\nHost: legacy\r\n\r\n", "GET /z HTTP/1.1\r\nhost: legacy\r\n\r\n"],
    ["GET http://legacy/abs HTTP/1.1\r\nHost: legacy\r\n\r\n", "GET /abs HTTP/1.1\r\nhost: legacy\r\n\r\n"],
    ["POST /empty HTTP/1.1\r\nHost: legacy\r\n\r\n", "POST /empty HTTP/1.1\r\nhost: legacy\r\ncontent-length: 0\r\n\r\n"],
  ];
  for (const [sent, expected] of cases) {
    const { seen } = await through(sent);
    expect(seen.map((r) => r.head)).toEqual([expected]);
  }
});

test("pipelined requests, one as received and one rebuilt, arrive in order", async () => {
  const first = "GET /1 HTTP/1.1\r\nHost: legacy\r\n\r\n";
  const { seen, reply } = await through(`${first}GET /2 HTTP/1.1\r\nHost: legacy\r\nKeep-Alive: timeout=5\r\n\r\n`);
  expect(reply.match(/HTTP\/1\.1 200 /g)).toHaveLength(2);
  expect(seen.map((r) => r.head)).toEqual([first, "GET /2 HTTP/1.1\r\nhost: legacy\r\n\r\n"]);
});

test("a head sent as received is sent again, whole, when the first endpoint refuses the connection", async () => {
  const head = "GET /retry HTTP/1.1\r\nHost: flaky\r\nX-Try: 1\r\n\r\n";
  // Round-robin: over two requests, one goes first to the endpoint nobody listens on.
  for (let i = 0; i < 2; i++) {
    const { seen, reply } = await through(head);
    expect(reply.startsWith("HTTP/1.1 200 ")).toBe(true);
    expect(seen.map((r) => r.head)).toEqual([head]);
  }
  expect(await metricValue(admin, "mesh_retries_total", { peer: "flaky" })).toBe(1);
});

test("a whole response with nothing to change reaches the client byte for byte; pipelined, in order", async () => {
  const plain = RESPONSES["/plain"]!;
  const get = (path: string) => `GET ${path} HTTP/1.1\r\nHost: legacy\r\n\r\n`;
  expect((await rawExchange(get("/plain"), { port: outbound, quietMs: 300 })).text).toBe(plain);
  expect((await rawExchange(get("/plain") + get("/plain"), { port: outbound, quietMs: 300 })).text).toBe(plain + plain);
});

test("responses with something to change are rebuilt: framing, hop-by-hop and identity fields, HTTP/1.0, a closing or HTTP/1.0 client, HEAD", async () => {
  const cases: [string, string][] = [
    ["GET /zeros HTTP/1.1\r\nHost: legacy\r\n\r\n", "HTTP/1.1 200 OK\r\nX-B: 1\r\ncontent-length: 5\r\n\r\nhello"],
    ["GET /hop HTTP/1.1\r\nHost: legacy\r\n\r\n", "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"],
    ["GET /old HTTP/1.1\r\nHost: legacy\r\n\r\n", "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"],
    ["GET /plain HTTP/1.1\r\nHost: legacy\r\nConnection: close\r\n\r\n", "HTTP/1.1 200 OK\r\nX-B: 1\r\nx-c: caf\xe9\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello"],
    ["GET /plain HTTP/1.0\r\nHost: legacy\r\nConnection: keep-alive\r\n\r\n", "HTTP/1.1 200 OK\r\nX-B: 1\r\nx-c: caf\xe9\r\ncontent-length: 5\r\nconnection: keep-alive\r\n\r\nhello"],
    ["HEAD /plain HTTP/1.1\r\nHost: legacy\r\n\r\n", "HTTP/1.1 200 OK\r\nX-B: 1\r\nx-c: caf\xe9\r\ncontent-length: 5\r\n\r\n"],
  ];
  for (const [request, expected] of cases) expect([request, (await rawExchange(request, { port: outbound, quietMs: 300 })).text]).toEqual([request, expected]);
});

test("pipelined: a response held to the end of the turn still goes out before the proxy's own answer to the next request", async () => {
  // The first response goes out as received, held to the end of the turn; the second
  // request names no service, and its 502 is written at once in the same turn.
  const { reply } = await through("GET /plain HTTP/1.1\r\nHost: legacy\r\n\r\nGET /x HTTP/1.1\r\nHost: nowhere\r\n\r\n");
  const first = reply.indexOf("HTTP/1.1 200 ");
  const second = reply.indexOf("HTTP/1.1 ", first + 1);
  expect(first).toBe(0);
  expect(reply.slice(0, second)).toEndWith("\r\n\r\nhello");
  expect(reply.slice(second)).toContain("no service named");
});
