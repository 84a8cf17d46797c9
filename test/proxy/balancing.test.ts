/** Load balancing through real proxies: traffic spreads over every instance of a service. */
import { afterAll, expect, test } from "bun:test";
import { MeshFixture } from "../helpers/mesh-fixture.ts";

const fx = new MeshFixture();
afterAll(() => fx.close());

test("three instances of payments each receive a share of traffic through the pair", async () => {
  await fx.init();
  await fx.issue("orders");
  await fx.issue("payments");
  const instances = [fx.echo("payments"), fx.echo("payments"), fx.echo("payments")];
  const proxies = await Promise.all(instances.map((s) => fx.proxy("payments", s.url)));
  const orders = await fx.proxy("orders", fx.echo("orders").url, fx.config("orders", { payments: proxies.map((p) => p.ports.inbound) }));
  // Concurrent batches so least-request sees in-flight differences.
  for (let batch = 0; batch < 30; batch++) {
    const responses = await Promise.all(
      Array.from({ length: 10 }, () => fetch(`http://127.0.0.1:${orders.ports.outbound}/`, { headers: { host: "payments" } })),
    );
    for (const r of responses) {
      expect(r.status).toBe(200);
      await r.arrayBuffer();
    }
  }
  const hits = instances.map((s) => s.hits);
  expect(hits.reduce((a, b) => a + b, 0)).toBe(300);
  for (const h of hits) expect(h).toBeGreaterThan(300 * 0.15);
});
