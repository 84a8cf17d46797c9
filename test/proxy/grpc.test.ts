/**
 * gRPC through the sidecar pair, as real processes on loopback: a grpc-js client →
 * outbound (h2c, :authority greeter) → mTLS (ALPN h2) → inbound → a grpc-js service.
 * Unary and streaming calls, statuses and trailers carried; the caller's proven identity
 * given to the service; refusals answered as gRPC statuses; calls counted by grpc-status.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { fixtureFor, metricValue } from "../helpers/mesh-fixture.ts";
import { alternatingService } from "../helpers/policies.ts";
import { freePort } from "../helpers/ports.ts";
import { eventually } from "../helpers/wait.ts";
import { accessLogLine } from "../helpers/observability.ts";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";

/** nginx, also where /usr/sbin is not on PATH. */
const findNginx = () => Bun.which("nginx") ?? ["/usr/sbin/nginx", "/usr/local/sbin/nginx"].find((p) => Bun.file(p).size > 0);
import { greeterClient, greeterService, grpc, unary, type GreeterClient, type GreeterService, type Greeting } from "../helpers/grpc.ts";

const ORDERS = "spiffe://mesh.local/ns/default/sa/orders";
const fx = fixtureFor("orders", "greeter");
let svc: GreeterService;
let greeterProxy: Awaited<ReturnType<typeof fx.proxy>>;
let ordersProxy: Awaited<ReturnType<typeof fx.proxy>>;
let client: GreeterClient;

beforeAll(async () => {
  svc = await greeterService();
  greeterProxy = await fx.proxy("greeter", `http://127.0.0.1:${svc.port}`);
  ordersProxy = await fx.proxy("orders", fx.echo("orders").url, fx.config("orders", { greeter: [greeterProxy.ports.inbound] }));
  client = greeterClient(ordersProxy.ports.outbound, "greeter");
});
afterAll(async () => {
  client?.close();
  await svc?.stop();
});

describe("calls through the pair", () => {
  test("a unary call: the service sees the caller's SPIFFE ID, not the copies the client sent", async () => {
    const md = new grpc.Metadata();
    md.set("x-mesh-client-id", "spiffe://mesh.local/ns/default/sa/admin");
    md.set("l5d-client-id", "spiffe://mesh.local/ns/default/sa/admin");
    const r = await unary<Greeting>(client, "hello", { name: "ada" }, md);
    expect(r.error).toBeUndefined();
    expect(r.value).toEqual({ message: "hello ada", caller: ORDERS, authority: "greeter", forged: null });
  });

  test("server streaming: every message in order", async () => {
    const got: number[] = [];
    const call = client.count({ to: 500 });
    call.on("data", (m: { n: number }) => got.push(m.n));
    const status = await new Promise<grpc.StatusObject>((resolve) => call.on("status", resolve));
    expect(status.code).toBe(grpc.status.OK);
    expect(got).toEqual(Array.from({ length: 500 }, (_, i) => i + 1));
  });

  test("client streaming: every message reaches the service", async () => {
    const result = await new Promise<{ sum: number; count: number }>((resolve, reject) => {
      const call = client.collect((err: grpc.ServiceError | null, v: { sum: number; count: number }) => (err ? reject(err) : resolve(v)));
      for (let n = 1; n <= 200; n++) call.write({ n });
      call.end();
    });
    expect(result).toEqual({ sum: 20100, count: 200 });
  });

  test("a service's error status, message and trailing metadata reach the client", async () => {
    const r = await unary(client, "fail", {});
    expect(r.error?.code).toBe(grpc.status.NOT_FOUND);
    expect(r.error?.details).toBe("no such greeting: é");
    expect(r.error?.metadata.get("x-reason")).toEqual(["gone"]);
  });

  test("a client's deadline ends the call at the service too", async () => {
    const before = svc.cancelled;
    const r = await unary(client, "slow", {}, new grpc.Metadata(), { deadline: Date.now() + 300 });
    expect(r.error?.code).toBe(grpc.status.DEADLINE_EXCEEDED);
    for (let i = 0; i < 100 && svc.cancelled === before; i++) await Bun.sleep(20);
    expect(svc.cancelled).toBe(before + 1);
  });

  test("many concurrent calls share the session and all succeed", async () => {
    const results = await Promise.all(Array.from({ length: 200 }, (_, i) => unary<Greeting>(client, "hello", { name: `n${i}` })));
    expect(results.filter((r) => r.value?.message.startsWith("hello n")).length).toBe(200);
  });
});

describe("nginx as the application's gRPC client", () => {
  // nginx's gRPC proxy keeps no HPACK dynamic table (SETTINGS_HEADER_TABLE_SIZE 0); Bun's
  // encoder ignores the setting, so the sidecar must send its headers never-indexed.
  test.skipIf(!findNginx())("every call through nginx's grpc_pass to the outbound succeeds, on kept-alive connections", async () => {
    const dir = join(fx.tmp.path, "nginx");
    mkdirSync(dir, { recursive: true });
    const port = freePort();
    const conf = `worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path ${dir}/cb; proxy_temp_path ${dir}/p; fastcgi_temp_path ${dir}/f; uwsgi_temp_path ${dir}/u; scgi_temp_path ${dir}/s;
  upstream sidecar { server 127.0.0.1:${ordersProxy.ports.outbound}; keepalive 8; }
  server {
    listen 127.0.0.1:${port} http2;
    location / { grpc_pass grpc://sidecar; grpc_set_header Host greeter; }
  }
}
`;
    writeFileSync(join(dir, "nginx.conf"), conf);
    const nginx = Bun.spawn([findNginx()!, "-p", dir, "-c", join(dir, "nginx.conf"), "-e", join(dir, "error.log"), "-g", "daemon off;"], { stdout: "ignore", stderr: "pipe" });
    const viaNginx = greeterClient(port, "greeter");
    try {
      expect(await eventually(async () => (await unary(viaNginx, "hello", { name: "up?" })).value !== undefined, 5000)).toBe(true);
      const codes: (number | undefined)[] = [];
      for (let i = 0; i < 20; i++) codes.push((await unary(viaNginx, "hello", { name: `n${i}` })).error?.code);
      expect(codes).toEqual(Array(20).fill(undefined));
    } finally {
      viaNginx.close();
      nginx.kill("SIGTERM");
      await nginx.exited;
    }
  });
});

describe("what the proxy answers itself", () => {
  test("a call to no known service is UNIMPLEMENTED, naming the cause", async () => {
    const other = greeterClient(ordersProxy.ports.outbound, "nowhere");
    const r = await unary(other, "hello", { name: "x" });
    other.close();
    expect(r.error?.code).toBe(grpc.status.UNIMPLEMENTED);
    expect(r.error?.details).toContain("no-route");
    expect(r.error?.metadata.get("x-mesh-error")).toEqual(["no-route"]);
  });
});

describe("metrics", () => {
  test("calls are counted by grpc-status on both sides, and as requests", async () => {
    expect(await metricValue(ordersProxy.ports.admin, "mesh_grpc_responses_total", { direction: "outbound", peer: "greeter", grpc_status: "5" })).toBeGreaterThanOrEqual(1);
    expect(await metricValue(ordersProxy.ports.admin, "mesh_grpc_responses_total", { direction: "outbound", peer: "greeter", grpc_status: "0" })).toBeGreaterThanOrEqual(1);
    expect(await metricValue(greeterProxy.ports.admin, "mesh_grpc_responses_total", { direction: "inbound", peer: "orders", grpc_status: "5" })).toBeGreaterThanOrEqual(1);
    expect(await metricValue(ordersProxy.ports.admin, "mesh_requests_total", { direction: "outbound", peer: "greeter", status: "2xx" })).toBeGreaterThanOrEqual(200);
    expect(await metricValue(ordersProxy.ports.admin, "mesh_grpc_responses_total", { direction: "outbound", peer: "unknown", grpc_status: "12" })).toBeGreaterThanOrEqual(1);
    // The HTTP/2 session to greeter's sidecar counts as the outbound's one connection to it,
    // and calls that complete are not cancellations: the session was never retired for them.
    expect(await metricValue(ordersProxy.ports.admin, "mesh_connections_open", { direction: "outbound" })).toBe(1);
    expect(await metricValue(ordersProxy.ports.admin, "mesh_connections_total", { direction: "outbound" })).toBe(1);
  });
});

describe("retries", () => {
  /** A Service of greeter's identity with a dead endpoint before the live one, round robin. */
  const flakyGreeter = (name: string, attempts: number) =>
    alternatingService(name, "  identity: greeter\n  ports: [{ name: grpc, port: 80, protocol: grpc }]", freePort(), greeterProxy.ports.inbound, `attempts: ${attempts}`);

  test("a call whose endpoint refuses the connection goes to another, its body replayed; with retries off it fails", async () => {
    const caller = await fx.proxy("orders", fx.echo("orders-2").url, fx.config("orders-retries", {}, flakyGreeter("flaky", 2) + flakyGreeter("strict", 0)));
    const flaky = greeterClient(caller.ports.outbound, "flaky");
    const strict = greeterClient(caller.ports.outbound, "strict");
    try {
      const unaryResults = await Promise.all(Array.from({ length: 10 }, (_, i) => unary<Greeting>(flaky, "hello", { name: `r${i}` })));
      expect(unaryResults.map((r) => r.value?.message)).toEqual(Array.from({ length: 10 }, (_, i) => `hello r${i}`));
      for (let i = 0; i < 4; i++) {
        const sum = await new Promise<{ sum: number; count: number }>((resolve, reject) => {
          const call = flaky.collect((err: grpc.ServiceError | null, v: { sum: number; count: number }) => (err ? reject(err) : resolve(v)));
          for (let n = 1; n <= 5; n++) call.write({ n });
          call.end();
        });
        expect(sum).toEqual({ sum: 15, count: 5 });
      }
      expect(await metricValue(caller.ports.admin, "mesh_retries_total", { peer: "flaky" })).toBeGreaterThanOrEqual(5);
      const strictResults = await Promise.all(Array.from({ length: 6 }, () => unary(strict, "hello", { name: "s" })));
      expect(strictResults.filter((r) => r.error?.code === grpc.status.UNAVAILABLE).length).toBeGreaterThanOrEqual(2);
    } finally {
      flaky.close();
      strict.close();
    }
  });
});

describe("outlier detection", () => {
  test("an endpoint whose calls end UNAVAILABLE is ejected, though each rides on HTTP 200", async () => {
    const failing = await greeterService({ unavailable: true });
    const failingProxy = await fx.proxy("greeter", `http://127.0.0.1:${failing.port}`);
    const mixed = `---
apiVersion: mesh.dev/v1alpha1
kind: Service
metadata: { name: mixed }
spec:
  identity: greeter
  ports: [{ name: grpc, port: 80, protocol: grpc }]
  endpoints: [{ address: 127.0.0.1, port: ${failingProxy.ports.inbound} }, { address: 127.0.0.1, port: ${greeterProxy.ports.inbound} }]
---
apiVersion: mesh.dev/v1alpha1
kind: DestinationPolicy
metadata: { name: mixed }
spec:
  loadBalancer: { type: round-robin }
  outlierDetection: { consecutiveFailures: 2 }
`;
    const caller = await fx.proxy("orders", fx.echo("orders-3").url, fx.config("orders-outliers", {}, mixed));
    const client = greeterClient(caller.ports.outbound, "mixed");
    try {
      const results: (number | undefined)[] = [];
      for (let i = 0; i < 20; i++) results.push((await unary(client, "hello", { name: "o" })).error?.code);
      // Round robin sends every other call to the failing endpoint until it is ejected after two.
      expect(results.filter((c) => c === grpc.status.UNAVAILABLE).length).toBe(2);
      expect(results.slice(-10).every((c) => c === undefined)).toBe(true);
      expect(await metricValue(caller.ports.admin, "mesh_outlier_ejections_total", { peer: "mixed" })).toBe(1);
    } finally {
      client.close();
      await failing.stop();
    }
  });
});

describe("idle streams", () => {
  test("a call that carries nothing for --stream-idle-timeout is ended, at the service too; one that keeps talking is not", async () => {
    const caller = await fx.proxy("orders", fx.echo("orders-6").url, fx.config("orders-idle", { greeter: [greeterProxy.ports.inbound] }), ["--stream-idle-timeout", "400ms"]);
    const client = greeterClient(caller.ports.outbound, "greeter");
    try {
      const before = svc.cancelled;
      const started = Date.now();
      const quiet = await unary(client, "slow", { ms: 5000 });
      expect(quiet.error?.code).toBe(grpc.status.UNAVAILABLE);
      expect(quiet.error?.metadata.get("x-mesh-error")).toEqual(["timeout"]);
      expect(Date.now() - started).toBeLessThan(3000);
      expect(await eventually(() => svc.cancelled === before + 1, 2000)).toBe(true);
      // Two seconds in all, a message every 150 ms: never idle for 400 ms.
      const ticks: number[] = [];
      const talking = client.tick({ times: 14, everyMs: 150 });
      talking.on("data", (m: { n: number }) => ticks.push(m.n));
      const status = await new Promise<grpc.StatusObject>((resolve) => talking.on("status", resolve));
      expect(status.code).toBe(grpc.status.OK);
      expect(ticks.length).toBe(14);
    } finally {
      client.close();
    }
  });
});

describe("rate limits", () => {
  test("calls past a RateLimitPolicy's burst are UNAVAILABLE with retry-after, and never reach the service", async () => {
    const limited = await greeterService();
    const limit = `---\napiVersion: mesh.dev/v1alpha1\nkind: RateLimitPolicy\nmetadata: { name: greeter }\nspec:\n  total: { requestsPerSecond: 1, burst: 3 }\n`;
    const limitedProxy = await fx.proxy("greeter", `http://127.0.0.1:${limited.port}`, fx.config("greeter-limited", {}, limit));
    const caller = await fx.proxy("orders", fx.echo("orders-5").url, fx.config("orders-limited", { greeter: [limitedProxy.ports.inbound] }));
    const client = greeterClient(caller.ports.outbound, "greeter");
    try {
      const results = await Promise.all(Array.from({ length: 8 }, () => unary(client, "hello", { name: "r" })));
      const refused = results.filter((r) => r.error !== undefined);
      expect(results.length - refused.length).toBe(3);
      expect(refused.every((r) => r.error!.code === grpc.status.UNAVAILABLE && r.error!.metadata.get("x-mesh-error")[0] === "rate-limited" && r.error!.metadata.get("retry-after").length === 1)).toBe(true);
      expect(limited.calls.length).toBe(3);
      expect(await metricValue(limitedProxy.ports.admin, "mesh_rate_limited_total", { peer: "orders" })).toBe(5);
    } finally {
      client.close();
      await limited.stop();
    }
  });
});

describe("circuit breaking", () => {
  test("a call past maxRequests is UNAVAILABLE naming the limit, and counted and logged as the proxy's own overflow", async () => {
    const breaker = `---\napiVersion: mesh.dev/v1alpha1\nkind: DestinationPolicy\nmetadata: { name: greeter }\nspec:\n  circuitBreaker: { maxRequests: 1 }\n  retries: { attempts: 0 }\n`;
    const log = join(fx.tmp.path, "orders-breaker.log");
    const caller = await fx.proxy("orders", fx.echo("orders-breaker").url, fx.config("orders-breaker", { greeter: [greeterProxy.ports.inbound] }, breaker), ["--access-log", log]);
    const limited = greeterClient(caller.ports.outbound, "greeter");
    try {
      const before = svc.calls.length;
      const slow = unary(limited, "slow", { ms: 1500 });
      expect(await eventually(() => svc.calls.length > before, 5000)).toBe(true);
      const refused = await unary(limited, "hello", { name: "over" });
      expect(refused.error?.code).toBe(grpc.status.UNAVAILABLE);
      expect([refused.error?.metadata.get("x-mesh-error"), refused.error?.metadata.get("x-mesh-overflow")]).toEqual([["overflow"], ["max-requests"]]);
      expect((await slow).error).toBeUndefined();
      const overflow = { direction: "outbound", peer: "greeter", error: "overflow", limit: "max-requests" };
      expect(await metricValue(caller.ports.admin, "mesh_local_replies_total", overflow)).toBe(1);
      expect(await accessLogLine(log, "/mesh.test.Greeter/Hello")).toMatchObject({ status: 503, grpc_status: "14", mesh_error: "overflow", mesh_overflow: "max-requests" });
      expect((await accessLogLine(log, "/mesh.test.Greeter/Slow")).mesh_error).toBeUndefined();
    } finally {
      limited.close();
    }
  });
});

describe("a burst on a fresh session", () => {
  test("180 calls at once to one endpoint: those refused before the peer's stream limit was known go again, all succeed", async () => {
    const caller = await fx.proxy("orders", fx.echo("orders-4").url, fx.config("orders-burst", { greeter: [greeterProxy.ports.inbound] }));
    // Three connections of 60 calls: each within the outbound's own limit of 100 streams, 180 together to greeter's one session.
    const clients = [1, 2, 3].map(() => greeterClient(caller.ports.outbound, "greeter", undefined, { "grpc.use_local_subchannel_pool": 1 }));
    try {
      const results = await Promise.all(Array.from({ length: 180 }, (_, i) => unary<Greeting>(clients[i % 3]!, "hello", { name: `b${i}` })));
      expect(results.filter((r) => r.error !== undefined).map((r) => r.error!.details)).toEqual([]);
      // Refused streams are the limit speaking, not the endpoint failing.
      expect(await metricValue(caller.ports.admin, "mesh_outlier_ejections_total", { peer: "greeter" })).toBe(0);
    } finally {
      for (const c of clients) c.close();
    }
  });
});

describe("drain", () => {
  test("SIGTERM to the serving side's sidecar: a call in flight completes, and it exits 0", async () => {
    const inFlight = unary<{ waited: number }>(client, "slow", { ms: 800 });
    await Bun.sleep(200);
    greeterProxy.proc.kill("SIGTERM");
    const r = await inFlight;
    expect(r.error).toBeUndefined();
    expect(r.value).toEqual({ waited: 800 });
    expect(await greeterProxy.proc.exited).toBe(0);
  });
});
