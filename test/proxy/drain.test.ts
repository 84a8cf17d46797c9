/** SIGTERM drains: requests already accepted finish, then the proxy exits 0. */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { mesh } from "../helpers/cli.ts";
import { MeshFixture, metricValue } from "../helpers/mesh-fixture.ts";

const fx = new MeshFixture();
let slowPort = 0;
let slow: ReturnType<typeof Bun.serve>;
beforeAll(async () => {
  await fx.init();
  await fx.issue("orders");
  await fx.issue("payments");
  // A slow service, so requests are still in flight when the signal lands.
  slow = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: async () => (await Bun.sleep(300), new Response("done")) });
  slowPort = slow.port!;
});
afterAll(async () => {
  slow.stop(true);
  await fx.close();
});

async function pair() {
  const payments = await fx.proxy("payments", `http://127.0.0.1:${slowPort}`);
  const orders = await fx.proxy("orders", fx.echo("orders").url, fx.config("orders", { payments: [payments.ports.inbound] }));
  return { payments, orders };
}

function load(port: number, n: number) {
  return Array.from({ length: n }, () =>
    fetch(`http://127.0.0.1:${port}/work`, { headers: { host: "payments" } }).then(async (r) => `${r.status} ${await r.text()}`, (e) => `error ${e}`),
  );
}

test("SIGTERM to the calling side's proxy under load: all 40 accepted requests complete, exit 0", async () => {
  const { orders, payments } = await pair();
  const inflight = load(orders.ports.outbound, 40);
  await Bun.sleep(100);
  orders.proc.kill("SIGTERM");
  const results = await Promise.all(inflight);
  expect(results.filter((r) => r !== "200 done")).toEqual([]);
  expect(await orders.proc.exited).toBe(0);
  expect(orders.stderr()).toContain('"clean":true');
  // The pair multiplexed 40 concurrent requests over a bounded set of pooled connections.
  expect(await metricValue(payments.ports.admin, "mesh_connections_total", { direction: "inbound" })).toBeLessThanOrEqual(40);
  payments.proc.kill("SIGTERM");
  expect(await payments.proc.exited).toBe(0);
});

test("SIGTERM to the serving side's proxy: requests in flight there complete, exit 0", async () => {
  const { orders, payments } = await pair();
  const inflight = load(orders.ports.outbound, 4);
  await Bun.sleep(100);
  payments.proc.kill("SIGTERM");
  const results = await Promise.all(inflight);
  expect(results.filter((r) => r !== "200 done")).toEqual([]);
  expect(await payments.proc.exited).toBe(0);
  expect(payments.stderr()).toContain('"clean":true');
  orders.proc.kill("SIGTERM");
  expect(await orders.proc.exited).toBe(0);
});

test("SIGTERM to one of two serving proxies under sustained load: no request fails, it exits 0", async () => {
  const quick = [fx.echo("payments"), fx.echo("payments")];
  const servers = await Promise.all(quick.map((s) => fx.proxy("payments", s.url)));
  const orders = await fx.proxy("orders", fx.echo("orders").url, fx.config("orders-sustained", { payments: servers.map((p) => p.ports.inbound) }));
  const outcomes = new Map<string, number>();
  const until = Date.now() + 2500;
  let sent = 0;
  // Four clients in closed loops, bounded by time and by count.
  const client = async () => {
    while (Date.now() < until && sent < 20_000) {
      sent++;
      const r = await fetch(`http://127.0.0.1:${orders.ports.outbound}/work`, { headers: { host: "payments" } }).then(
        async (res) => `${res.status}${res.headers.get("x-mesh-error") ? ` ${res.headers.get("x-mesh-error")}` : ""}`,
        (e) => `error ${e}`,
      );
      outcomes.set(r, (outcomes.get(r) ?? 0) + 1);
    }
  };
  const clients = Array.from({ length: 4 }, client);
  await Bun.sleep(800);
  const hitsAtSignal = quick[0]!.hits;
  servers[0]!.proc.kill("SIGTERM");
  expect(await servers[0]!.proc.exited).toBe(0);
  await Promise.all(clients);
  expect([...outcomes.keys()]).toEqual(["200"]);
  expect(sent).toBeGreaterThan(200);
  // Traffic went on, to the instance still serving.
  expect(quick[1]!.hits).toBeGreaterThan(hitsAtSignal / 2);
  expect(servers[0]!.stderr()).toContain('"clean":true');
});

test("while draining, the service can still call out to finish the requests it already accepted", async () => {
  await fx.issue("ledger");
  const ledger = await fx.proxy("ledger", fx.echo("ledger").url);
  let outboundPort = 0;
  // payments answers only after calling ledger through its own sidecar, 300 ms in.
  const payments = fx.service(async () => {
    await Bun.sleep(300);
    const res = await fetch(`http://127.0.0.1:${outboundPort}/entry`, { headers: { host: "ledger" } });
    return new Response(`ledger said ${res.status}`);
  });
  const paymentsProxy = await fx.proxy("payments", payments.url, fx.config("payments-calls-ledger", { ledger: [ledger.ports.inbound] }));
  outboundPort = paymentsProxy.ports.outbound;
  const orders = await fx.proxy("orders", fx.echo("orders").url, fx.config("orders-calls-payments", { payments: [paymentsProxy.ports.inbound] }));
  const inflight = fetch(`http://127.0.0.1:${orders.ports.outbound}/pay`, { headers: { host: "payments" } }).then(async (r) => `${r.status} ${await r.text()}`);
  // The drain starts once the request is accepted (the service has it), however long a loaded machine takes to get it there.
  const deadline = Date.now() + 10_000;
  while (payments.hits === 0 && Date.now() < deadline) await Bun.sleep(10);
  paymentsProxy.proc.kill("SIGTERM");
  expect(await inflight).toBe("200 ledger said 200");
  expect(await paymentsProxy.proc.exited).toBe(0);
});

test("--outbound-drain-delay: with nothing in flight the outbound still takes the service's calls that long after SIGTERM; without it, it closes", async () => {
  const payments = await fx.proxy("payments", `http://127.0.0.1:${slowPort}`);
  const config = fx.config("orders-delay", { payments: [payments.ports.inbound] });
  const call = (port: number) => fetch(`http://127.0.0.1:${port}/late`, { headers: { host: "payments" } }).then(async (r) => `${r.status} ${await r.text()}`, () => "refused");

  const lingering = await fx.proxy("orders", fx.echo("orders").url, config, ["--outbound-drain-delay", "1s"]);
  const signalled = performance.now();
  lingering.proc.kill("SIGTERM");
  await Bun.sleep(400);
  // A call the service makes while it shuts down, on a new connection.
  expect(await call(lingering.ports.outbound)).toBe("200 done");
  expect(await lingering.proc.exited).toBe(0);
  expect(performance.now() - signalled).toBeGreaterThanOrEqual(1000);

  const prompt = await fx.proxy("orders", fx.echo("orders").url, config);
  prompt.proc.kill("SIGTERM");
  await Bun.sleep(400);
  expect(await call(prompt.ports.outbound)).toBe("refused");
  expect(await prompt.proc.exited).toBe(0);
  payments.proc.kill("SIGTERM");
  expect(await payments.proc.exited).toBe(0);
});

test("--outbound-drain-delay longer than the drain timeout is refused naming both", async () => {
  const r = await mesh("proxy", "--service", "orders", "--upstream", "http://127.0.0.1:8080", "--certs-dir", join(fx.tmp.path, "certs", "orders"), "--outbound-drain-delay", "40s");
  expect(r.code).toBe(64);
  expect(r.err.split("\n")[0]).toBe("error: --outbound-drain-delay: 40000 ms is longer than the drain timeout (30000 ms), which ends every drain");
});
