/** Retries and outlier ejection through real proxies: a dead instance is routed around. */
import { afterAll, expect, test } from "bun:test";
import { MeshFixture, metricValue } from "../helpers/mesh-fixture.ts";

const fx = new MeshFixture();
afterAll(() => fx.close());

/** A loopback port with nothing listening: connections to it are refused. */
function deadPort(): number {
  const s = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = s.port;
  s.stop(true);
  return port;
}

test("GETs succeed while one of two instances is down; it is retried around and ejected", async () => {
  await fx.init();
  await fx.issue("orders");
  await fx.issue("payments");
  const live = fx.echo("payments");
  const payments = await fx.proxy("payments", live.url);
  const orders = await fx.proxy("orders", fx.echo("orders").url, fx.config("orders", { payments: [payments.ports.inbound, deadPort()] }));
  const call = (init: RequestInit = {}) => fetch(`http://127.0.0.1:${orders.ports.outbound}/`, { ...init, headers: { host: "payments" } });

  for (let i = 0; i < 40; i++) {
    const res = await call();
    expect(res.status).toBe(200);
    await res.arrayBuffer();
  }
  expect(live.hits).toBe(40);
  expect(await metricValue(orders.ports.admin, "mesh_retries_total", { peer: "payments" })).toBeGreaterThanOrEqual(1);
  expect(await metricValue(orders.ports.admin, "mesh_outlier_ejections_total", { peer: "payments" })).toBe(1);

  // Once ejected, the dead instance gets no more tries: no further retries are needed.
  const retriesBefore = await metricValue(orders.ports.admin, "mesh_retries_total", { peer: "payments" });
  for (let i = 0; i < 20; i++) await (await call()).arrayBuffer();
  expect(await metricValue(orders.ports.admin, "mesh_retries_total", { peer: "payments" })).toBe(retriesBefore);
});

test("a POST with a body whose connection failed never left: it goes to another instance, once, body intact", async () => {
  const live = fx.echo("payments");
  const payments = await fx.proxy("payments", live.url);
  const orders = await fx.proxy("orders", fx.echo("orders3").url, fx.config("post-retry", { payments: [deadPort(), payments.ports.inbound] }, `---
apiVersion: mesh.dev/v1alpha1
kind: DestinationPolicy
metadata: {name: payments}
spec:
  loadBalancer: {type: round-robin}
  outlierDetection: {consecutiveFailures: 100000}
`));
  for (let i = 0; i < 6; i++) {
    const res = await fetch(`http://127.0.0.1:${orders.ports.outbound}/charge`, { method: "POST", body: `amount=${i}`, headers: { host: "payments" } });
    expect(res.status).toBe(200);
    expect(((await res.json()) as { body: string }).body).toBe(`amount=${i}`);
  }
  expect(live.hits).toBe(6);
  // Round robin sent every other first try to the dead instance.
  expect(await metricValue(orders.ports.admin, "mesh_retries_total", { peer: "payments" })).toBe(3);
});

test("a POST the upstream received and then failed on is answered with its error, never replayed", async () => {
  // A service that reads the request and dies without answering.
  let hits = 0;
  const dying = Bun.listen({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      data(socket, chunk) {
        if (chunk.toString().includes("amount=5")) {
          hits++;
          socket.terminate();
        }
      },
    },
  });
  const payments = await fx.proxy("payments", `http://127.0.0.1:${dying.port}`);
  const orders = await fx.proxy("orders", fx.echo("orders4").url, fx.config("post-once", { payments: [payments.ports.inbound] }));
  const res = await fetch(`http://127.0.0.1:${orders.ports.outbound}/charge`, { method: "POST", body: "amount=5", headers: { host: "payments" } });
  expect(res.status).toBeGreaterThanOrEqual(500);
  expect(hits).toBe(1);
  expect(await metricValue(orders.ports.admin, "mesh_retries_total", { peer: "payments" })).toBe(0);
  dying.stop(true);
});
