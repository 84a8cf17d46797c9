/**
 * A RateLimitPolicy with scope: service through the control plane, with real processes:
 * the service's figures are divided among its instances, each sidecar learning how many
 * there are from its own Service's endpoints, and divided again when one more registers.
 */
import { expect, test } from "bun:test";
import { controlPlaneFixture, eventually, serviceManifest } from "../helpers/control-plane.ts";

const fx = controlPlaneFixture("mesh-cp-ratelimit-", serviceManifest("orders"), serviceManifest("payments"), {
  apiVersion: "mesh.dev/v1alpha1",
  kind: "RateLimitPolicy",
  metadata: { name: "payments", namespace: "default" },
  // Slow enough that nothing refills during the test: what passes is the burst.
  spec: { scope: "service", total: { requestsPerSecond: 0.01, burst: 4 } },
});
const sidecar = (service: string, instance: string) => fx.sidecar(service, instance);

/** The instance count a sidecar divides its limits by, from its /config_dump. */
async function instancesSeen(admin: number): Promise<number | undefined> {
  const dump = (await (await fetch(`http://127.0.0.1:${admin}/config_dump`)).json()) as { rateLimit?: { instances?: number } };
  return dump.rateLimit?.instances;
}

test("two instances let the service's burst in between them, and a third re-divides it", async () => {
  const [one, two, orders] = await Promise.all([sidecar("payments", "1"), sidecar("payments", "2"), sidecar("orders", "1")]);
  for (const p of [one, two]) expect(await eventually(async () => (await instancesSeen(p.ports.admin)) === 2)).toBe(true);
  const statuses: number[] = [];
  // 20 calls: each instance all but surely gets two or more of them.
  for (let i = 0; i < 20; i++) {
    const res = await fetch(`http://127.0.0.1:${orders.ports.outbound}/pay`, { headers: { host: "payments" } });
    statuses.push(res.status);
    await res.arrayBuffer();
  }
  expect(statuses.filter((s) => s === 200)).toHaveLength(4);
  expect(statuses.filter((s) => s !== 200).every((s) => s === 429)).toBe(true);
  expect([one.echo.hits, two.echo.hits]).toEqual([2, 2]);

  const three = await sidecar("payments", "3");
  for (const p of [one, two, three]) expect(await eventually(async () => (await instancesSeen(p.ports.admin)) === 3)).toBe(true);
});
