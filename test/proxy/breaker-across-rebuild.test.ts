/**
 * A destination rebuilt while calls to it are in flight (a renewed certificate, a changed
 * DestinationPolicy) goes on counting them: circuitBreaker.maxRequests is not reset to
 * nothing in flight, and the endpoint's in-flight count (what least-request balancing
 * reads) keeps the call. Carried TCP's maxConnections across a renewal is tested in
 * review-tcp-tunnel.test.ts.
 */
import { describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { mesh } from "../helpers/cli.ts";
import { fixtureFor, metricValue } from "../helpers/mesh-fixture.ts";
import { eventually } from "../helpers/wait.ts";

const fx = fixtureFor("orders", "payments");

/** Calls to /hold wait until released; any other path is answered at once. */
const held: (() => void)[] = [];
const releaseHeld = () => held.splice(0).forEach((release) => release());

const ordersConfig = (breaker: string, paymentsInbound: number) =>
  `apiVersion: mesh.dev/v1alpha1\nkind: Service\nmetadata: {name: payments}\nspec:\n  ports: [{name: http, port: 80}]\n  endpoints: [{address: 127.0.0.1, port: ${paymentsInbound}}]\n` +
  `---\napiVersion: mesh.dev/v1alpha1\nkind: DestinationPolicy\nmetadata: {name: payments}\nspec:\n  service: payments\n  circuitBreaker: ${breaker}\n`;

async function call(port: number, path = "/", method = "GET"): Promise<Response> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { method, headers: { host: "payments" }, body: method === "POST" ? "order 42" : undefined });
  await res.arrayBuffer();
  return res;
}

type Dump = { destinations: { name: string; policy: { circuitBreaker: { maxRequests: number } }; endpoints: { inflight: number }[] }[] };
async function payments(adminPort: number) {
  const dump = (await (await fetch(`http://127.0.0.1:${adminPort}/config_dump`)).json()) as Dump;
  const d = dump.destinations.find((x) => x.name === "payments")!;
  return { maxRequests: d.policy.circuitBreaker.maxRequests, inflight: d.endpoints[0]!.inflight };
}

async function setup(breaker = (n: number) => `{maxRequests: ${n}}`) {
  const service = fx.service((req) =>
    new URL(req.url).pathname === "/hold" ? new Promise<Response>((resolve) => held.push(() => resolve(new Response("held")))) : new Response("ok"),
  );
  const paymentsProxy = await fx.proxy("payments", service.url);
  const configPath = join(fx.tmp.path, "orders.yaml");
  writeFileSync(configPath, ordersConfig(breaker(1), paymentsProxy.ports.inbound));
  const orders = await fx.proxy("orders", fx.echo("orders").url, configPath);
  /** A call to /hold, once the service holds it: its response, to come. */
  const hold = async (): Promise<{ response: Promise<Response> }> => {
    const before = held.length;
    const response = call(orders.ports.outbound, "/hold");
    expect(await eventually(() => held.length === before + 1, 5000)).toBe(true);
    return { response };
  };
  const reconfigure = (limit: number) => writeFileSync(configPath, ordersConfig(breaker(limit), paymentsProxy.ports.inbound));
  const renew = async () => {
    const expiry = await metricValue(orders.ports.admin, "mesh_certificate_expiry_seconds");
    const r = await mesh("ca", "issue", "--service", "orders", "--ca-dir", fx.ca, "--out", join(fx.tmp.path, "certs", "orders"), "--force", "--ttl", "12h");
    expect(r.code).toBe(0);
    expect(await eventually(async () => (await metricValue(orders.ports.admin, "mesh_certificate_expiry_seconds")) !== expiry, 10_000, 100)).toBe(true);
  };
  return { orders, hold, reconfigure, renew };
}

describe("the breaker and in-flight counts of a destination rebuilt under calls in flight", () => {
  test("a renewed certificate: the call in flight still holds maxRequests' only place, and its endpoint still counts it", async () => {
    const { orders, hold, renew } = await setup();
    const first = await hold();
    await renew();
    const refused = await call(orders.ports.outbound);
    expect({ status: refused.status, overflow: refused.headers.get("x-mesh-overflow") }).toEqual({ status: 503, overflow: "max-requests" });
    expect((await payments(orders.ports.admin)).inflight).toBe(1);
    releaseHeld();
    expect((await first.response).status).toBe(200);
    expect((await call(orders.ports.outbound)).status).toBe(200);
    expect((await payments(orders.ports.admin)).inflight).toBe(0);
  }, 30_000);

  test("maxRequests raised from 1 to 2 by a config edit: the call in flight counts against the new limit (one more goes, not two)", async () => {
    const { orders, hold, reconfigure } = await setup();
    const first = await hold();
    reconfigure(2);
    expect(await eventually(async () => (await payments(orders.ports.admin)).maxRequests === 2, 10_000, 100)).toBe(true);
    const second = await hold();
    const refused = await call(orders.ports.outbound);
    expect({ status: refused.status, overflow: refused.headers.get("x-mesh-overflow") }).toEqual({ status: 503, overflow: "max-requests" });
    expect((await payments(orders.ports.admin)).inflight).toBe(2);
    releaseHeld();
    expect([(await first.response).status, (await second.response).status]).toEqual([200, 200]);
    expect((await payments(orders.ports.admin)).inflight).toBe(0);
  }, 30_000);
});

describe("requests waiting for a connection when their destination is rebuilt", () => {
  // Retries off: a waiting call that failed would not be saved by a second try (nor would one past the retry budget).
  const atMaxConnections = (n: number) => `{maxConnections: ${n}}\n  retries: {attempts: 0}`;
  /** A POST (never retried) that waits for payments' only connection (maxConnections 1), once the proxy counts it waiting. */
  async function queued(adminPort: number, outbound: number): Promise<{ response: Promise<Response> }> {
    const response = call(outbound, "/hold", "POST");
    expect(await eventually(async () => (await metricValue(adminPort, "mesh_pending_requests", { peer: "payments" })) === 1, 5000, 50)).toBe(true);
    return { response };
  }

  test("a renewed certificate: the waiting call goes on in the new pool instead of failing", async () => {
    const { orders, hold, renew } = await setup(atMaxConnections);
    const first = await hold();
    const second = await queued(orders.ports.admin, orders.ports.outbound);
    await renew();
    // The new pool has a place of its own: the waiting call reaches the service before the first is released.
    expect(await eventually(() => held.length === 2, 5000)).toBe(true);
    releaseHeld();
    expect([(await first.response).status, (await second.response).status]).toEqual([200, 200]);
  }, 30_000);

  test("maxConnections raised from 1 to 2 by a config edit: the waiting call takes the new place", async () => {
    const { orders, hold, reconfigure } = await setup(atMaxConnections);
    const first = await hold();
    const second = await queued(orders.ports.admin, orders.ports.outbound);
    reconfigure(2);
    expect(await eventually(() => held.length === 2, 10_000)).toBe(true);
    releaseHeld();
    expect([(await first.response).status, (await second.response).status]).toEqual([200, 200]);
  }, 30_000);
});
