/**
 * HTTPRoute through the control plane and real sidecars: a canary split and a
 * header-matched route are applied by the caller's sidecar (the call reaches the backend's
 * own instances, with its identity checked, and is counted under the backend), a sidecar
 * that subscribed to the routed service alone is sent the backends too, `mesh apply`
 * refuses a route naming a Service that does not exist or a second route for a service,
 * and a Service a route uses cannot be deleted under it.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { mesh, tempDir } from "../helpers/cli.ts";
import { cpSidecar, eventually, serviceManifest, startControlPlane, type Sidecar, type TestControlPlane } from "../helpers/control-plane.ts";
import { echoService, metricValue, type EchoService } from "../helpers/mesh-fixture.ts";
import { stopAll } from "../helpers/procs.ts";
import { endpointsSeenBy } from "../helpers/traffic.ts";

const tmp = tempDir("mesh-cp-routes-");
const echoes: EchoService[] = [];
let cp: TestControlPlane;
let admin: string[];
let orders: Sidecar;
const hits = { payments: 0, canary: 0 };

async function sidecar(service: string, extra: string[] = []): Promise<Sidecar> {
  const echo = echoService(service);
  echoes.push(echo);
  return cpSidecar(cp, tmp.path, service, "1", echo.url, extra);
}

const file = (name: string, text: string) => {
  const path = join(tmp.path, name);
  writeFileSync(path, text);
  return path;
};

const ROUTE = `apiVersion: mesh.dev/v1alpha1
kind: HTTPRoute
metadata: { name: payments-canary }
spec:
  service: payments
  rules:
    - matches: [{ headers: [{ name: x-canary, value: "always" }] }]
      backends: [{ service: payments-canary }]
    - backends:
        - { service: payments, weight: 3 }
        - { service: payments-canary, weight: 1 }
`;

beforeAll(async () => {
  cp = await startControlPlane(tmp.path);
  await cp.apply(serviceManifest("orders"), serviceManifest("payments"), serviceManifest("payments-canary"));
  const tokenFile = join(tmp.path, "admin.token");
  writeFileSync(tokenFile, cp.adminToken);
  admin = ["--admin-url", `http://127.0.0.1:${cp.ports.admin}`, "--admin-token-file", tokenFile];
  await Promise.all([sidecar("payments"), sidecar("payments-canary")]);
  // orders subscribes to payments alone: the route's backend must come with it.
  orders = await sidecar("orders", ["--calls", "payments"]);
  expect(await eventually(async () => (await endpointsSeenBy(orders.ports.admin, "payments")).length === 1)).toBe(true);
});
afterAll(async () => {
  await stopAll();
  for (const e of echoes) e.server.stop(true);
  tmp.cleanup();
});

/** Which service answered a call to payments from orders. */
async function answeredBy(headers: Record<string, string> = {}): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${orders.ports.outbound}/v1/charges`, { headers: { host: "payments", ...headers } });
  expect(res.status).toBe(200);
  return ((await res.json()) as { service: string }).service;
}

test("mesh apply refuses a route naming a Service that does not exist, and a second route for a service", async () => {
  const ghost = await mesh("apply", ...admin, "-f", file("ghost.yaml", ROUTE.replace("payments-canary }]", "payments-ghost }]")));
  expect(ghost.code).not.toBe(0);
  expect(ghost.err).toContain('spec.rules[0].backends[0].service: no Service "payments-ghost" in namespace "default"');
  const two = await mesh("apply", ...admin, "-f", file("two.yaml", `${ROUTE}---\n${ROUTE.replace("name: payments-canary", "name: second")}`));
  expect(two.code).not.toBe(0);
  expect(two.err).toContain('spec.service: Service "payments" already has');
});

test("a route applied: the caller's sidecar sends matched calls and a share of the rest to the canary, which it was sent though not subscribed", async () => {
  for (let i = 0; i < 10; i++) expect(await answeredBy()).toBe("payments");
  const applied = await mesh("apply", ...admin, "-f", file("route.yaml", ROUTE));
  expect(applied.code).toBe(0);
  expect(await eventually(async () => (await endpointsSeenBy(orders.ports.admin, "payments-canary")).length === 1, 10_000)).toBe(true);
  expect(await eventually(async () => (await answeredBy({ "x-canary": "always" })) === "payments-canary", 5000)).toBe(true);
  for (let i = 0; i < 5; i++) expect(await answeredBy({ "x-canary": "always" })).toBe("payments-canary");
  for (let i = 0; i < 200; i++) hits[(await answeredBy()) === "payments" ? "payments" : "canary"]++;
  // 3 to 1: about 50 of 200 to the canary; bounds far outside chance (binomial sd ~6).
  expect(hits.canary).toBeGreaterThan(20);
  expect(hits.canary).toBeLessThan(90);
  expect(await metricValue(orders.ports.admin, "mesh_requests_total", { direction: "outbound", peer: "payments-canary", status: "2xx" })).toBeGreaterThanOrEqual(hits.canary + 5);
  const dump = (await (await fetch(`http://127.0.0.1:${orders.ports.admin}/config_dump`)).json()) as { routes: { route: string; applied: boolean }[] };
  expect(dump.routes).toEqual([expect.objectContaining({ route: "default/payments-canary", applied: true })]);
});

test("a Service a route uses cannot be deleted under it; deleting the route first frees it", async () => {
  const blocked = await mesh("delete", ...admin, "Service", "payments-canary");
  expect(blocked.code).not.toBe(0);
  expect(blocked.err).toContain('is used by HTTPRoute "payments-canary"');
  expect((await mesh("delete", ...admin, "HTTPRoute", "payments-canary")).code).toBe(0);
  expect(await eventually(async () => {
    for (let i = 0; i < 20; i++) if ((await answeredBy({ "x-canary": "always" })) !== "payments") return false;
    return true;
  }, 10_000)).toBe(true);
});
