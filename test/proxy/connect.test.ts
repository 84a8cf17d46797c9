/**
 * The outbound listener as an HTTP proxy's clients use it with CONNECT: grpc-js with
 * `http_proxy` set (as `mesh run` sets it), curl's proxy tunnel, undici's ProxyAgent.
 * The sidecar answers 200 and carries the calls that follow, routed by their own Host or
 * :authority; it never connects to the CONNECT target itself. What it refuses: an unknown
 * service, a malformed target, a second CONNECT, TLS inside the tunnel, and CONNECT on
 * the inbound.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { clientTls } from "../helpers/data-plane.ts";
import { fixtureFor, metricValue, type EchoService } from "../helpers/mesh-fixture.ts";
import { greeterClient, greeterService, unary, type GreeterService, type Greeting } from "../helpers/grpc.ts";
import { rawExchange } from "../helpers/raw-http.ts";

const fx = fixtureFor("orders", "payments", "greeter");
let payments: EchoService;
let greeter: GreeterService;
let paymentsProxy: Awaited<ReturnType<typeof fx.proxy>>;
let ordersProxy: Awaited<ReturnType<typeof fx.proxy>>;

beforeAll(async () => {
  payments = fx.echo("payments");
  greeter = await greeterService();
  paymentsProxy = await fx.proxy("payments", payments.url);
  const greeterProxy = await fx.proxy("greeter", `http://127.0.0.1:${greeter.port}`);
  ordersProxy = await fx.proxy("orders", fx.echo("orders").url, fx.config("orders", { payments: [paymentsProxy.ports.inbound], greeter: [greeterProxy.ports.inbound] }));
});
afterAll(() => greeter?.stop());

const outbound = () => ({ port: ordersProxy.ports.outbound });
const CALL = "GET /after-connect HTTP/1.1\r\nHost: payments\r\nConnection: close\r\n\r\n";

describe("CONNECT on the outbound listener", () => {
  test("raw: 200, then the HTTP/1.1 call inside reaches the service with the caller's identity", async () => {
    const r = await rawExchange(`CONNECT payments:80 HTTP/1.1\r\nHost: payments:80\r\nProxy-Authorization: Basic eDp5\r\n\r\n${CALL}`, outbound());
    expect(r.statuses).toEqual([200, 200]);
    expect(r.text).toContain('"path":"/after-connect"');
    expect(r.text).toContain('"caller":"spiffe://mesh.local/ns/default/sa/orders"');
  });

  test("curl's proxy tunnel (-p) carries a call", async () => {
    const p = Bun.spawn(["curl", "-sS", "--max-time", "10", "-p", "-x", `http://127.0.0.1:${ordersProxy.ports.outbound}`, "http://payments/tunnelled"], { stdout: "pipe", stderr: "pipe" });
    const out = await new Response(p.stdout).text();
    expect(await p.exited).toBe(0);
    expect(JSON.parse(out)).toMatchObject({ service: "payments", path: "/tunnelled", caller: "spiffe://mesh.local/ns/default/sa/orders" });
  });

  test("grpc-js with http_proxy set, as under mesh run: the call goes through the tunnel", async () => {
    const saved = process.env.http_proxy;
    process.env.http_proxy = `http://127.0.0.1:${ordersProxy.ports.outbound}`;
    let client;
    try {
      // The target is the service's name; grpc-js sends CONNECT greeter:50051 to the proxy.
      client = greeterClient(0, "greeter", "greeter:50051");
    } finally {
      if (saved === undefined) delete process.env.http_proxy;
      else process.env.http_proxy = saved;
    }
    const r = await unary<Greeting>(client, "hello", { name: "proxied" });
    client.close();
    expect(r.error).toBeUndefined();
    expect(r.value).toMatchObject({ message: "hello proxied", caller: "spiffe://mesh.local/ns/default/sa/orders" });
  });

  test("a CONNECT to no known service is 404 no-route, and nothing after it is read", async () => {
    const before = payments.hits;
    const r = await rawExchange(`CONNECT api.example.com:443 HTTP/1.1\r\nHost: api.example.com:443\r\n\r\n${CALL}`, outbound());
    expect(r.statuses).toEqual([404]);
    expect(r.text).toContain("x-mesh-error: no-route");
    expect(r.closed).toBe(true);
    await Bun.sleep(50);
    expect(payments.hits).toBe(before);
  });

  test("a target that is not host:port is 400; so is a second CONNECT inside the tunnel", async () => {
    const bad = await rawExchange(`CONNECT payments HTTP/1.1\r\nHost: payments\r\n\r\n`, outbound());
    expect(bad.statuses).toEqual([400]);
    expect(bad.closed).toBe(true);
    const twice = await rawExchange(`CONNECT payments:80 HTTP/1.1\r\n\r\nCONNECT payments:80 HTTP/1.1\r\n\r\n${CALL}`, outbound());
    expect(twice.statuses).toEqual([200, 400]);
    expect(twice.closed).toBe(true);
  });

  test("TLS inside the tunnel is closed at its first byte, and counted", async () => {
    const before = await metricValue(ordersProxy.ports.admin, "mesh_requests_refused_total", { direction: "outbound", reason: "connect-tls" });
    const clientHello = Buffer.from([0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x00]);
    const r = await rawExchange(Buffer.concat([Buffer.from("CONNECT payments:443 HTTP/1.1\r\n\r\n"), clientHello]), outbound());
    expect(r.statuses).toEqual([200]);
    expect(r.closed).toBe(true);
    expect(await metricValue(ordersProxy.ports.admin, "mesh_requests_refused_total", { direction: "outbound", reason: "connect-tls" })).toBe(before + 1);
  });

  test("the inbound never takes CONNECT", async () => {
    const r = await rawExchange(`CONNECT payments:80 HTTP/1.1\r\nHost: payments:80\r\n\r\n${CALL}`, { port: paymentsProxy.ports.inbound, tls: clientTls(fx, "orders") });
    expect(r.statuses).toEqual([400]);
    expect(r.closed).toBe(true);
  });
});
