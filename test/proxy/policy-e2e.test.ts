/**
 * DestinationPolicy through real proxies: each balancer spreads as it should, the
 * circuit breaker refuses with a reason, the request timeout holds, status retries
 * stay idempotent and within budget, and a plain-HTTP service outside the mesh works.
 */
import { describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { mesh } from "../helpers/cli.ts";
import { fixtureFor, metricValue, type EchoService } from "../helpers/mesh-fixture.ts";

const fx = fixtureFor("orders", "payments");

interface Ep {
  port: number;
  weight?: number;
}

function serviceDoc(name: string, endpoints: Ep[], extra = ""): string {
  const eps = endpoints.map((e) => `    - {address: 127.0.0.1, port: ${e.port}${e.weight !== undefined ? `, weight: ${e.weight}` : ""}}\n`).join("");
  return `apiVersion: mesh.dev/v1alpha1\nkind: Service\nmetadata:\n  name: ${name}\nspec:\n  ports: [{name: http, port: 80}]\n${extra}  endpoints:\n${eps}`;
}

function policyDoc(service: string, spec: string): string {
  return `apiVersion: mesh.dev/v1alpha1\nkind: DestinationPolicy\nmetadata:\n  name: ${service}\nspec:\n${spec}\n`;
}

let configs = 0;
function writeConfig(...docs: string[]): string {
  const path = join(fx.tmp.path, `policy-${++configs}.yaml`);
  writeFileSync(path, docs.join("---\n"));
  return path;
}

/** payments instances, each behind its own sidecar; returns the sidecars' inbound ports. */
async function paymentsBehindProxies(services: EchoService[]): Promise<number[]> {
  const proxies = await Promise.all(services.map((s) => fx.proxy("payments", s.url)));
  return proxies.map((p) => p.ports.inbound);
}

async function ordersWith(...docs: string[]) {
  return fx.proxy("orders", fx.echo("orders").url, writeConfig(...docs));
}

async function call(port: number, init: RequestInit & { path?: string } = {}): Promise<Response> {
  const res = await fetch(`http://127.0.0.1:${port}${init.path ?? "/"}`, { ...init, headers: { host: "payments", ...(init.headers as Record<string, string>) } });
  await res.arrayBuffer();
  return res;
}

const slow = (ms: number) => async () => {
  await Bun.sleep(ms);
  return new Response("slow");
};

describe("load balancing from policy", () => {
  test("round robin honours endpoint weights exactly", async () => {
    const a = fx.echo("payments");
    const b = fx.echo("payments");
    const [pa, pb] = await paymentsBehindProxies([a, b]);
    const orders = await ordersWith(
      serviceDoc("payments", [{ port: pa!, weight: 1 }, { port: pb!, weight: 3 }]),
      policyDoc("payments", "  loadBalancer: {type: round-robin}"),
    );
    for (let i = 0; i < 200; i++) expect((await call(orders.ports.outbound)).status).toBe(200);
    expect([a.hits, b.hits]).toEqual([50, 150]);
  });

  test("ring hash on a header keeps each key on one instance and spreads keys", async () => {
    const instances = [fx.echo("payments"), fx.echo("payments"), fx.echo("payments")];
    const ports = await paymentsBehindProxies(instances);
    const orders = await ordersWith(
      serviceDoc("payments", ports.map((port) => ({ port }))),
      policyDoc("payments", "  loadBalancer: {type: ring-hash, hashOn: {header: x-user}}"),
    );
    const owner = new Map<string, number>();
    for (let user = 0; user < 30; user++) {
      for (let i = 0; i < 4; i++) {
        const before = instances.map((s) => s.hits);
        expect((await call(orders.ports.outbound, { headers: { "x-user": `user-${user}` } })).status).toBe(200);
        const hit = instances.findIndex((s, j) => s.hits > before[j]!);
        if (!owner.has(`user-${user}`)) owner.set(`user-${user}`, hit);
        expect(hit).toBe(owner.get(`user-${user}`)!);
      }
    }
    expect(new Set(owner.values()).size).toBe(3);
  });

  test("ring hash on a cookie", async () => {
    const instances = [fx.echo("payments"), fx.echo("payments")];
    const ports = await paymentsBehindProxies(instances);
    const orders = await ordersWith(
      serviceDoc("payments", ports.map((port) => ({ port }))),
      policyDoc("payments", "  loadBalancer: {type: ring-hash, hashOn: {cookie: session}}"),
    );
    const owners = new Set<number>();
    for (let s = 0; s < 20; s++) {
      const before = instances.map((i) => i.hits);
      for (let i = 0; i < 3; i++) await call(orders.ports.outbound, { headers: { cookie: `theme=dark; session=s${s}` } });
      const gained = instances.map((inst, j) => inst.hits - before[j]!);
      expect(gained.filter((g) => g > 0)).toEqual([3]);
      owners.add(gained.findIndex((g) => g > 0));
    }
    expect(owners.size).toBe(2);
  });

  test("ewma sends most traffic to the faster instance", async () => {
    // Far slower than anything load on a shared machine adds to the fast path.
    const fast = fx.echo("payments");
    const slower = fx.service(slow(400));
    const ports = await paymentsBehindProxies([fast, slower]);
    const orders = await ordersWith(serviceDoc("payments", ports.map((port) => ({ port }))), policyDoc("payments", "  loadBalancer: {type: ewma}"));
    // One at a time, so in-flight counts are always equal: least-request would split
    // these evenly; only the latency average can tell the instances apart.
    for (let i = 0; i < 60; i++) await call(orders.ports.outbound);
    expect(fast.hits + slower.hits).toBe(60);
    expect(fast.hits).toBeGreaterThan(60 * 0.8);
  });
});

describe("circuit breaker", () => {
  test("past maxRequests new calls get 503 with x-mesh-overflow, and the circuit shows open", async () => {
    const ports = await paymentsBehindProxies([fx.service(slow(600))]);
    const orders = await ordersWith(serviceDoc("payments", ports.map((port) => ({ port }))), policyDoc("payments", "  circuitBreaker: {maxRequests: 2}"));
    const held = [call(orders.ports.outbound), call(orders.ports.outbound)];
    await Bun.sleep(150);
    expect(await metricValue(orders.ports.admin, "mesh_circuit_open", { peer: "payments" })).toBe(1);
    const refused = await Promise.all(Array.from({ length: 4 }, () => call(orders.ports.outbound)));
    for (const r of refused) {
      expect(r.status).toBe(503);
      expect(r.headers.get("x-mesh-overflow")).toBe("max-requests");
      expect(r.headers.get("x-mesh-error")).toBe("overflow");
    }
    for (const r of await Promise.all(held)) expect(r.status).toBe(200);
    expect(await metricValue(orders.ports.admin, "mesh_circuit_open", { peer: "payments" })).toBe(0);
    expect((await call(orders.ports.outbound)).status).toBe(200);
  });
});

describe("timeouts", () => {
  test("the request timeout answers 504, named in x-mesh-error", async () => {
    const ports = await paymentsBehindProxies([fx.service(slow(3000)), fx.service(slow(3000))]);
    const orders = await ordersWith(serviceDoc("payments", ports.map((port) => ({ port }))), policyDoc("payments", "  timeouts: {request: 300ms}"));
    const started = performance.now();
    const res = await call(orders.ports.outbound);
    const elapsed = performance.now() - started;
    expect(res.status).toBe(504);
    expect(res.headers.get("x-mesh-error")).toBe("timeout");
    expect(elapsed).toBeLessThan(2000);
  });
});

describe("retries", () => {
  const failing = () => fx.service(() => new Response("busy", { status: 503 }));

  test("a configured status is retried on another instance for GET, never for a POST", async () => {
    const bad = failing();
    const good = fx.echo("payments");
    const ports = await paymentsBehindProxies([bad, good]);
    // Round robin and no ejection, so every other first try lands on the failing instance.
    const orders = await ordersWith(
      serviceDoc("payments", ports.map((port) => ({ port }))),
      policyDoc("payments", "  loadBalancer: {type: round-robin}\n  outlierDetection: {consecutiveFailures: 100000}"),
    );
    for (let i = 0; i < 20; i++) expect((await call(orders.ports.outbound)).status).toBe(200);
    expect(await metricValue(orders.ports.admin, "mesh_retries_total", { peer: "payments" })).toBe(10);
    const posts = [];
    for (let i = 0; i < 20; i++) posts.push((await call(orders.ports.outbound, { method: "POST" })).status);
    expect(posts.filter((s) => s === 503)).toHaveLength(10);
    // An Idempotency-Key makes a bodiless POST safe to send twice.
    for (let i = 0; i < 10; i++) expect((await call(orders.ports.outbound, { method: "POST", headers: { "idempotency-key": `k${i}` } })).status).toBe(200);
    expect(await metricValue(orders.ports.admin, "mesh_retries_total", { peer: "payments" })).toBe(15);
  });

  test("when every instance fails, retries stay within the budget and the client gets the upstream's 503", async () => {
    const ports = await paymentsBehindProxies([failing(), failing()]);
    const orders = await ordersWith(
      serviceDoc("payments", ports.map((port) => ({ port }))),
      policyDoc("payments", "  retries: {attempts: 3, budget: {percent: 10, minPerSecond: 0}}\n  outlierDetection: {consecutiveFailures: 100000}"),
    );
    for (let i = 0; i < 100; i++) {
      const res = await call(orders.ports.outbound);
      expect(res.status).toBe(503);
      expect(res.headers.get("x-mesh-error")).toBeNull();
    }
    const retries = await metricValue(orders.ports.admin, "mesh_retries_total", { peer: "payments" });
    expect(retries).toBeGreaterThanOrEqual(8);
    expect(retries).toBeLessThanOrEqual(10);
  });

  test("attempts: 0 turns retries off", async () => {
    const ports = await paymentsBehindProxies([failing(), fx.echo("payments")]);
    const orders = await ordersWith(
      serviceDoc("payments", ports.map((port) => ({ port }))),
      policyDoc("payments", "  loadBalancer: {type: round-robin}\n  retries: {attempts: 0}\n  outlierDetection: {consecutiveFailures: 100000}"),
    );
    const statuses = [];
    for (let i = 0; i < 10; i++) statuses.push((await call(orders.ports.outbound)).status);
    expect(statuses.filter((s) => s === 503)).toHaveLength(5);
    expect(await metricValue(orders.ports.admin, "mesh_retries_total", { peer: "payments" })).toBe(0);
  });
});

describe("services outside the mesh", () => {
  test("mtls: false reaches a plain HTTP endpoint directly, with no identity claimed", async () => {
    const plain = fx.echo("legacy");
    const orders = await fx.proxy(
      "orders",
      fx.echo("orders").url,
      writeConfig(serviceDoc("legacy", [{ port: plain.server.port! }], "  mtls: false\n")),
    );
    const res = await fetch(`http://127.0.0.1:${orders.ports.outbound}/x`, { headers: { host: "legacy", "x-mesh-client-id": "spiffe://mesh.local/ns/default/sa/admin" } });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { caller: string | null; path: string };
    expect(body).toMatchObject({ caller: null, path: "/x" });
  });
});

describe("config checks at start", () => {
  test("a policy for a service the config does not define is refused, naming file and document", async () => {
    const path = writeConfig(serviceDoc("payments", [{ port: 1 }]), policyDoc("paymnts", "  {}"));
    const r = await mesh("proxy", "--service", "orders", "--upstream", "http://127.0.0.1:1", "--config", path, "--certs-dir", join(fx.tmp.path, "certs", "orders"));
    expect(r.code).toBe(65);
    expect(r.err).toContain(`${path}#1 spec.service: no Service "paymnts" in namespace "default"`);
  });
});

describe("connect timeout and connection limits", () => {
  /** Accepts TCP connections and never answers: a TLS handshake to it hangs. */
  function blackHole() {
    const s = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    return s;
  }

  test("a handshake that hangs fails at the connect timeout and is retried on another instance", async () => {
    const hole = blackHole();
    const ports = await paymentsBehindProxies([fx.echo("payments")]);
    const orders = await ordersWith(
      serviceDoc("payments", [{ port: hole.port }, { port: ports[0]! }]),
      policyDoc("payments", "  loadBalancer: {type: round-robin}\n  timeouts: {connect: 300ms}\n  outlierDetection: {consecutiveFailures: 100000}"),
    );
    const started = performance.now();
    for (let i = 0; i < 4; i++) expect((await call(orders.ports.outbound)).status).toBe(200);
    expect(performance.now() - started).toBeLessThan(4000);
    expect(await metricValue(orders.ports.admin, "mesh_retries_total", { peer: "payments" })).toBe(2);

    const only = await ordersWith(serviceDoc("payments", [{ port: hole.port }]), policyDoc("payments", "  timeouts: {connect: 300ms}"));
    const t0 = performance.now();
    const res = await call(only.ports.outbound);
    expect(res.status).toBe(502);
    expect(res.headers.get("x-mesh-error")).toBe("connect-failure");
    expect(performance.now() - t0).toBeLessThan(3000);
    hole.stop(true);
  });

  test("past maxConnections requests wait; past maxPendingRequests they get 503 max-pending-requests", async () => {
    const ports = await paymentsBehindProxies([fx.service(slow(500))]);
    const orders = await ordersWith(serviceDoc("payments", ports.map((port) => ({ port }))), policyDoc("payments", "  circuitBreaker: {maxConnections: 1, maxPendingRequests: 1}"));
    const first = call(orders.ports.outbound);
    await Bun.sleep(100);
    const second = call(orders.ports.outbound);
    await Bun.sleep(100);
    const third = await call(orders.ports.outbound);
    expect(third.status).toBe(503);
    expect(third.headers.get("x-mesh-overflow")).toBe("max-pending-requests");
    expect((await first).status).toBe(200);
    expect((await second).status).toBe(200);
    // Both went over the one connection, and the metrics count it.
    expect(await metricValue(orders.ports.admin, "mesh_connections_total", { direction: "outbound" })).toBe(1);
    expect(await metricValue(orders.ports.admin, "mesh_connections_open", { direction: "outbound" })).toBe(1);
  });
});
