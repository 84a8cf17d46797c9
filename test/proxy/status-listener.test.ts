/**
 * The status listener (`--status`): /live, /ready and /metrics for probes and scrapers,
 * and nothing else, so it can face the pod network while the admin API stays on loopback;
 * both are read-only listeners with their own accept cap.
 * Real `mesh proxy` processes; raw sockets where curl-like clients would hide the bytes.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { mesh } from "../helpers/cli.ts";
import { MeshFixture, metricValue } from "../helpers/mesh-fixture.ts";
import { READ_ONLY_MAX_CONNECTIONS } from "../../src/proxy/read-only-listener.ts";
import { freePort } from "../helpers/ports.ts";

const fx = new MeshFixture();
let slow: ReturnType<typeof Bun.serve>;
beforeAll(async () => {
  await fx.init();
  await fx.issue("orders");
  await fx.issue("payments");
  slow = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: async () => (await Bun.sleep(1500), new Response("done")) });
});
afterAll(async () => {
  slow.stop(true);
  await fx.close();
});

async function sidecar(extra: string[] = ["--status", "127.0.0.1:0"], config?: string) {
  const p = await fx.proxy("orders", `http://127.0.0.1:${slow.port}`, config, extra);
  return { ...p, status: p.ready.status as number };
}

/** Sends raw bytes on one connection; resolves with what came back once the server closes or 1.5 s pass. */
function raw(port: number, bytes: string): Promise<{ text: string; closed: boolean }> {
  return new Promise((resolve) => {
    let text = "";
    const timer = setTimeout(() => resolve({ text, closed: false }), 1500);
    void Bun.connect({
      hostname: "127.0.0.1",
      port,
      socket: {
        open: (s) => void s.write(bytes),
        data: (_s, d) => void (text += d.toString("latin1")),
        close: () => (clearTimeout(timer), resolve({ text, closed: true })),
      },
    });
  });
}

test("serves /live, /ready and /metrics, and nothing the admin API keeps to loopback", async () => {
  const p = await sidecar();
  const base = `http://127.0.0.1:${p.status}`;
  expect((await fetch(`${base}/live`)).status).toBe(200);
  const ready = await fetch(`${base}/ready?probe=kubelet`);
  expect([ready.status, await ready.text(), ready.headers.get("cache-control")]).toEqual([200, "ready\n", "no-store"]);
  const metrics = await fetch(`${base}/metrics`);
  expect(metrics.headers.get("content-type")).toContain("version=0.0.4");
  expect(await metrics.text()).toContain("# TYPE mesh_requests_total counter");
  const dump = await fetch(`${base}/config_dump`);
  expect([dump.status, await dump.text()]).toEqual([404, "not found; this port serves /live, /ready, /metrics\n"]);
  // The admin API still has everything.
  expect((await fetch(`http://127.0.0.1:${p.ports.admin}/config_dump`)).status).toBe(200);
  const head = await fetch(`${base}/ready`, { method: "HEAD" });
  expect([head.status, head.headers.get("content-length"), await head.text()]).toEqual([200, "6", ""]);
  p.proc.kill("SIGTERM");
  expect(await p.proc.exited).toBe(0);
});

test("read-only: other methods get 405 with Allow, bodies and upgrades are refused, malformed heads counted", async () => {
  const p = await sidecar();
  const post = await fetch(`http://127.0.0.1:${p.status}/ready`, { method: "POST" });
  expect([post.status, post.headers.get("allow")]).toEqual([405, "GET, HEAD"]);
  const withBody = await raw(p.status, "GET /ready HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc");
  expect(withBody.text).toStartWith("HTTP/1.1 400 ");
  expect(withBody.closed).toBe(true);
  const upgrade = await raw(p.status, "GET /ready HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
  expect(upgrade.text).toStartWith("HTTP/1.1 404 ");
  expect(upgrade.closed).toBe(true);
  const malformed = await raw(p.status, "GET /re ady HTTP/1.1\r\n\r\n");
  expect(malformed.text).toStartWith("HTTP/1.1 400 ");
  // Keep-alive and pipelining work as on the data path.
  const two = await raw(p.status, "GET /live HTTP/1.1\r\nHost: x\r\n\r\nGET /ready HTTP/1.1\r\nHost: x\r\n\r\n");
  expect(two.text.match(/HTTP\/1\.1 200 OK/g)?.length).toBe(2);
  expect(two.closed).toBe(false);
  expect(await metricValue(p.ports.admin, "mesh_requests_refused_total", { direction: "status" })).toBe(2);
  p.proc.kill("SIGTERM");
  expect(await p.proc.exited).toBe(0);
});

test("while the sidecar drains, /ready says 503 and /live 200 until it exits", async () => {
  const p = await sidecar();
  // A caller's request to the slow service holds the drain open.
  const caller = await fx.proxy("payments", fx.echo("payments").url, fx.config("payments", { orders: [p.ports.inbound] }));
  const pending = fetch(`http://127.0.0.1:${caller.ports.outbound}/work`, { headers: { host: "orders" } }).then(async (r) => `${r.status} ${await r.text()}`);
  await Bun.sleep(300);
  p.proc.kill("SIGTERM");
  await Bun.sleep(200);
  const ready = await fetch(`http://127.0.0.1:${p.status}/ready`);
  expect([ready.status, await ready.text()]).toEqual([503, "not ready: draining\n"]);
  expect((await fetch(`http://127.0.0.1:${p.status}/live`)).status).toBe(200);
  expect(await pending).toBe("200 done");
  expect(await p.proc.exited).toBe(0);
  caller.proc.kill("SIGTERM");
  expect(await caller.proc.exited).toBe(0);
});

test.each(["status", "admin"] as const)(`a flood on the %s port is held to ${READ_ONLY_MAX_CONNECTIONS} connections, closed at accept past it, and counted`, async (which) => {
  const p = await sidecar();
  const port = which === "status" ? p.status : p.ports.admin;
  const sockets: { end(): void }[] = [];
  let closedByServer = 0;
  const extra = 16;
  for (let i = 0; i < READ_ONLY_MAX_CONNECTIONS + extra; i++)
    sockets.push(await Bun.connect({ hostname: "127.0.0.1", port, socket: { data: () => {}, close: () => void closedByServer++ } }));
  for (let i = 0; i < 100 && closedByServer < extra; i++) await Bun.sleep(10);
  expect(closedByServer).toBe(extra);
  // The data path's own budget is untouched, and the port serves again once a place is free.
  for (const s of sockets) s.end();
  await Bun.sleep(100);
  expect((await fetch(`http://127.0.0.1:${port}/ready`)).status).toBe(200);
  expect(await metricValue(p.ports.admin, "mesh_connections_refused_total", { direction: which })).toBe(extra);
  p.proc.kill("SIGTERM");
  expect(await p.proc.exited).toBe(0);
});

test("ProxyConfig.status binds it; it clashes with no other listener; absent, there is none", async () => {
  const path = join(fx.tmp.path, "status.yaml");
  const free = freePort();
  writeFileSync(path, `apiVersion: mesh.dev/v1alpha1\nkind: ProxyConfig\nmetadata: {name: orders}\nspec:\n  upstream: http://127.0.0.1:8080\n  status: {address: 127.0.0.1, port: ${free}}\n`);
  const p = await sidecar([], path);
  expect(p.status).toBe(free);
  expect((await fetch(`http://127.0.0.1:${p.status}/live`)).status).toBe(200);
  p.proc.kill("SIGTERM");
  const none = await sidecar([]);
  expect(none.ready.status).toBeUndefined();
  expect(((await (await fetch(`http://127.0.0.1:${none.ports.admin}/config_dump`)).json()) as { listeners: object }).listeners).not.toHaveProperty("status");
  none.proc.kill("SIGTERM");
  const clash = join(fx.tmp.path, "clash.yaml");
  writeFileSync(clash, "apiVersion: mesh.dev/v1alpha1\nkind: ProxyConfig\nmetadata: {name: orders}\nspec:\n  upstream: http://127.0.0.1:8080\n  status: {address: 0.0.0.0, port: 15000}\n");
  const r = await mesh("proxy", "--service", "orders", "--certs-dir", join(fx.tmp.path, "certs", "orders"), "--config", clash);
  expect(r.code).toBe(65);
  expect(r.err).toContain("spec.status.port: port 15000 is also used by admin");
  const bad = await mesh("proxy", "--service", "orders", "--certs-dir", join(fx.tmp.path, "certs", "orders"), "--upstream", "http://127.0.0.1:8080", "--status", "nope");
  expect(bad.code).toBe(64);
  expect(bad.err).toContain("--status");
  const shared = await mesh("proxy", "--service", "orders", "--certs-dir", join(fx.tmp.path, "certs", "orders"), "--upstream", "http://127.0.0.1:8080", "--status", "0.0.0.0:15000");
  expect([shared.code, shared.err.split("\n")[0]]).toEqual([64, "error: --status: the status and admin listeners would share port 15000"]);
});

/** `mesh ARGS` as its own process, killed if it outlives 10 s. */
function meshProcess(...args: string[]): { code: number | null; err: string } {
  const p = Bun.spawnSync([process.execPath, join(import.meta.dir, "..", "..", "src", "main.ts"), ...args], { stderr: "pipe", timeout: 10_000, env: { ...process.env, MESH_RUNTIME_TUNING: "off" } });
  return { code: p.exitCode, err: p.stderr.toString() };
}

test("a port another process holds: the listener and address named, and the process exits at once", async () => {
  const holder = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data: () => {} } });
  try {
    const certs = join(fx.tmp.path, "certs", "orders");
    const base = ["proxy", "--service", "orders", "--certs-dir", certs, "--upstream", "http://127.0.0.1:8080", "--inbound", "127.0.0.1:0", "--outbound", "127.0.0.1:0"];
    // The status listener binds after the others: they must not keep the failed process alive.
    const late = meshProcess(...base, "--admin", "127.0.0.1:0", "--status", `127.0.0.1:${holder.port}`);
    expect([late.code, late.err.trim()]).toEqual([1, `error: status listener: cannot listen on 127.0.0.1:${holder.port}: the port is in use (another process, or another listener of this one)`]);
    const admin = meshProcess(...base, "--admin", `127.0.0.1:${holder.port}`);
    expect([admin.code, admin.err.trim()]).toEqual([1, `error: admin listener: cannot listen on 127.0.0.1:${holder.port}: the port is in use (another process, or another listener of this one)`]);
  } finally {
    holder.stop(true);
  }
});
