/**
 * A real TCP protocol through the sidecar pair: redis-server behind the callee's sidecar,
 * redis-cli and redis-benchmark on the caller's side connecting to its local TCP
 * upstream listener. Commands, pipelined load from many connections, pub/sub on a
 * long-lived connection, and a caller an AuthorizationPolicy refuses.
 * (`apt-get install -y redis-server`; .ci/run installs it.)
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { fixtureFor, metricValue } from "../helpers/mesh-fixture.ts";
import { freePort } from "../helpers/ports.ts";
import { eventually } from "../helpers/wait.ts";

const redisServer = Bun.which("redis-server");
const fx = fixtureFor("orders", "web", "cache");
let redis: Subprocess | undefined;
let cache: Awaited<ReturnType<typeof fx.proxy>>;
let orders: Awaited<ReturnType<typeof fx.proxy>>;
let web: Awaited<ReturnType<typeof fx.proxy>>;
const local = (p: { ready: unknown }) => (p.ready as { tcp: number[] }).tcp[0]!;

function write(name: string, text: string): string {
  const path = join(fx.tmp.path, `${name}.yaml`);
  writeFileSync(path, text);
  return path;
}

const cacheService = (target: number, endpoint?: number) =>
  `apiVersion: mesh.dev/v1alpha1\nkind: Service\nmetadata:\n  name: cache\nspec:\n  ports:\n    - {name: redis, port: 6379, protocol: tcp, targetPort: ${target}}\n` +
  (endpoint ? `  endpoints:\n    - {address: 127.0.0.1, port: ${endpoint}}\n` : "");

/** redis-cli against `port`, bounded in time; its exit code and output. */
async function cli(port: number, ...args: string[]): Promise<{ code: number; out: string }> {
  const p = Bun.spawn(["redis-cli", "-h", "127.0.0.1", "-p", String(port), ...args], { stdout: "pipe", stderr: "pipe" });
  const timer = setTimeout(() => p.kill(), 10_000);
  const [out, err] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text()]);
  const code = await p.exited;
  clearTimeout(timer);
  return { code, out: (out + err).trim() };
}

beforeAll(async () => {
  if (!redisServer) return;
  const port = freePort();
  redis = Bun.spawn([redisServer, "--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--protected-mode", "no"], { stdout: "ignore", stderr: "ignore" });
  expect(await eventually(async () => (await cli(port, "PING")).out === "PONG", 10_000)).toBe(true);
  const deny = `---\napiVersion: mesh.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata:\n  name: cache-callers\nspec:\n  service: cache\n  rules:\n    - from: { services: [orders] }\n`;
  cache = await fx.proxy("cache", fx.echo("cache-web").url, write("cache", cacheService(port) + deny));
  const callers = write("callers", cacheService(port, cache.ports.inbound));
  orders = await fx.proxy("orders", fx.echo("orders").url, callers, ["--tcp-upstream", "cache:6379=127.0.0.1:0"]);
  web = await fx.proxy("web", fx.echo("web").url, callers, ["--tcp-upstream", "cache:6379=127.0.0.1:0"]);
});
afterAll(async () => {
  if (!redis) return;
  redis.kill();
  await redis.exited;
});

describe.skipIf(!redisServer)("redis through the pair", () => {
  test("commands and their answers", async () => {
    expect(await cli(local(orders), "SET", "greeting", "hello mesh")).toEqual({ code: 0, out: "OK" });
    expect(await cli(local(orders), "GET", "greeting")).toEqual({ code: 0, out: "hello mesh" });
    expect(await cli(local(orders), "INCRBY", "n", "41")).toEqual({ code: 0, out: "41" });
  });

  test("redis-benchmark: 20,000 commands from 20 connections, pipelined, none failing", async () => {
    const p = Bun.spawn(["redis-benchmark", "-h", "127.0.0.1", "-p", String(local(orders)), "-n", "20000", "-c", "20", "-P", "8", "-t", "set,get", "-q", "--csv"], { stdout: "pipe", stderr: "pipe" });
    const timer = setTimeout(() => p.kill(), 60_000);
    const out = await new Response(p.stdout).text();
    expect(await p.exited).toBe(0);
    clearTimeout(timer);
    expect(out).toContain('"SET"');
    expect(out).toContain('"GET"');
    expect(await metricValue(orders.ports.admin, "mesh_tcp_connections_total", { direction: "outbound", peer: "cache", result: "reset" })).toBe(0);
  });

  test("pub/sub on a long-lived connection: a message published through the pair reaches a subscriber through it", async () => {
    const sub = Bun.spawn(["redis-cli", "-h", "127.0.0.1", "-p", String(local(orders)), "SUBSCRIBE", "news"], { stdout: "pipe", stderr: "ignore" });
    const reader = sub.stdout.getReader();
    let seen = "";
    const read = (async () => {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        seen += new TextDecoder().decode(value);
      }
    })();
    try {
      expect(await eventually(() => seen.includes("subscribe"), 5000)).toBe(true);
      expect(await eventually(async () => (await cli(local(orders), "PUBLISH", "news", "carried")).out === "1", 5000)).toBe(true);
      expect(await eventually(() => seen.includes("carried"), 5000)).toBe(true);
    } finally {
      sub.kill();
      await sub.exited;
      await read.catch(() => undefined);
    }
  });

  test("a caller the policy does not allow gets no answer from redis, and is counted as denied", async () => {
    const r = await cli(local(web), "GET", "greeting");
    expect(r.out).not.toContain("hello mesh");
    expect(await eventually(async () => (await metricValue(cache.ports.admin, "mesh_tcp_connections_total", { direction: "inbound", peer: "web", result: "denied" })) >= 1)).toBe(true);
  });
});
