/**
 * Opaque TCP through the sidecar pair, as real processes on loopback: a client → the
 * caller's local TCP upstream listener → mTLS (ALPN mesh-tcp/1) → the callee's inbound →
 * the service's tcp port. Bytes both ways, the client's half-close passed on in order,
 * large transfers with backpressure, and every refusal: a port the Service does not
 * declare, an AuthorizationPolicy, the wrong peer identity, no endpoint.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { fixtureFor, metricValue } from "../helpers/mesh-fixture.ts";
import { tcpEchoService, tcpExchange, type TcpService } from "../helpers/tcp.ts";
import { eventually } from "../helpers/wait.ts";

const fx = fixtureFor("orders", "db");
let echo: TcpService;
let db: Awaited<ReturnType<typeof fx.proxy>>;
let orders: Awaited<ReturnType<typeof fx.proxy>>;
let local: number;

/** The db Service: a tcp port 5432 served by the workload on `target`, and an http port. */
function dbService(target: number, endpoints: number[]): string {
  return `apiVersion: mesh.dev/v1alpha1
kind: Service
metadata:
  name: db
spec:
  ports:
    - name: http
      port: 80
    - name: pg
      port: 5432
      protocol: tcp
      targetPort: ${target}
${endpoints.length ? `  endpoints:\n${endpoints.map((p) => `    - address: 127.0.0.1\n      port: ${p}\n`).join("")}` : ""}`;
}

function writeConfig(name: string, text: string): string {
  const path = join(fx.tmp.path, `${name}.yaml`);
  writeFileSync(path, text);
  return path;
}

const tcpPorts = (p: { ready: unknown }) => (p.ready as { tcp: number[] }).tcp;

beforeAll(async () => {
  echo = tcpEchoService();
  const web = fx.echo("db-web");
  db = await fx.proxy("db", web.url, writeConfig("db", dbService(echo.port, [])), ["--access-log", join(fx.tmp.path, "db-access.log")]);
  orders = await fx.proxy("orders", fx.echo("orders").url, writeConfig("orders", dbService(echo.port, [db.ports.inbound])), [
    "--tcp-upstream", "db:5432=127.0.0.1:0",
    "--access-log", join(fx.tmp.path, "orders-access.log"),
  ]);
  local = tcpPorts(orders)[0]!;
});
afterAll(() => echo?.stop());

describe("bytes through the pair", () => {
  test("a client's bytes reach the service, its answer comes back, and the half-close arrives after the bytes", async () => {
    const r = await tcpExchange(local, "hello");
    expect(r.error).toBeUndefined();
    expect(r.text).toBe("hellobye 5");
  });

  test("8 MiB each way, in order, with the client writing faster than the pair relays", async () => {
    const payload = new Uint8Array(8 * 1024 * 1024);
    for (let i = 0; i < payload.length; i++) payload[i] = (i * 131 + (i >> 11)) & 0xff;
    const r = await tcpExchange(local, payload, { timeoutMs: 60_000 });
    expect(r.error).toBeUndefined();
    expect(r.bytes.byteLength).toBe(payload.byteLength + `bye ${payload.byteLength}`.length);
    expect(Buffer.from(r.bytes.subarray(0, payload.byteLength)).equals(Buffer.from(payload))).toBe(true);
  });

  test("twenty connections at once each get their own stream", async () => {
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => tcpExchange(local, `conn-${i}`)));
    results.forEach((r, i) => expect(r.text).toBe(`conn-${i}bye ${`conn-${i}`.length}`));
  });

  test("connections are counted by result and bytes, on both sides", async () => {
    expect(await eventually(async () => (await metricValue(orders.ports.admin, "mesh_tcp_connections_total", { direction: "outbound", peer: "db", result: "ok" })) >= 22)).toBe(true);
    expect(await eventually(async () => (await metricValue(db.ports.admin, "mesh_tcp_connections_total", { direction: "inbound", peer: "orders", result: "ok" })) >= 22)).toBe(true);
    expect(await metricValue(db.ports.admin, "mesh_tcp_received_bytes_total", { direction: "inbound", peer: "orders" })).toBeGreaterThanOrEqual(8 * 1024 * 1024);
    expect(await metricValue(orders.ports.admin, "mesh_tcp_sent_bytes_total", { direction: "outbound", peer: "db" })).toBeGreaterThanOrEqual(8 * 1024 * 1024);
    expect(await metricValue(orders.ports.admin, "mesh_tcp_connections_open", { direction: "outbound" })).toBe(0);
  });
});
