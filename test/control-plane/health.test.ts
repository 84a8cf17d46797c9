/**
 * Health decides which endpoints are offered: judged from traffic (a service failing
 * request after request stops being offered, and is offered again once a probe finds it
 * answering), or checked on a health path.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { tempDir } from "../helpers/cli.ts";
import { cpSidecar, eventually, serviceManifest, startControlPlane, type TestControlPlane } from "../helpers/control-plane.ts";
import { stopAll } from "../helpers/procs.ts";
import { endpointsSeenBy } from "../helpers/traffic.ts";

const tmp = tempDir("mesh-health-");
const servers: ReturnType<typeof Bun.serve>[] = [];
let cp: TestControlPlane;

beforeAll(async () => {
  cp = await startControlPlane(tmp.path);
  await cp.apply(serviceManifest("orders"), serviceManifest("payments"));
});
afterAll(async () => {
  await stopAll();
  for (const s of servers) s.stop(true);
  tmp.cleanup();
});

/** A service whose answers the test switches: 200, or 503 while `broken`. */
function switchable(path = "/") {
  const state = { broken: false, healthPath: path };
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    fetch: (req) => (state.broken && (new URL(req.url).pathname === state.healthPath || state.healthPath === "/") ? new Response("down", { status: 503 }) : new Response("ok")),
  });
  servers.push(server);
  return { state, url: `http://127.0.0.1:${server.port}` };
}

const sidecar = (service: string, instance: string, upstream: string, extra: string[] = []) => cpSidecar(cp, tmp.path, service, instance, upstream, extra);

async function offered(service: string): Promise<number[]> {
  const { items } = (await (await cp.admin("GET", "/v1/endpoints")).json()) as { items: { service: string; port: number; healthy: boolean }[] };
  return items.filter((e) => e.service === service && e.healthy).map((e) => e.port).sort();
}

test("passive: a service failing every request stops being offered, and returns when it answers again", async () => {
  const good = switchable();
  const flaky = switchable();
  const a = await sidecar("payments", "good", good.url);
  const b = await sidecar("payments", "flaky", flaky.url);
  const orders = await sidecar("orders", "1", switchable().url);
  expect(await eventually(async () => (await offered("payments")).length === 2)).toBe(true);
  const seenByOrders = async () => (await endpointsSeenBy(orders.ports.admin, "payments")).length;
  expect(await eventually(async () => (await seenByOrders()) === 2)).toBe(true);
  flaky.state.broken = true;
  // Straight at the flaky instance's sidecar would need a client certificate; through orders, retries hide the failures.
  for (let i = 0; i < 40; i++) {
    const res = await fetch(`http://127.0.0.1:${orders.ports.outbound}/`, { headers: { host: "payments" } });
    expect(res.status).toBe(200);
    await res.arrayBuffer();
  }
  expect(await eventually(async () => (await offered("payments")).join() === String(a.ports.inbound), 5000)).toBe(true);
  expect(await eventually(async () => (await seenByOrders()) === 1, 5000)).toBe(true);
  flaky.state.broken = false;
  expect(await eventually(async () => (await offered("payments")).length === 2, 5000)).toBe(true);
  expect(await offered("payments")).toEqual([a.ports.inbound, b.ports.inbound].sort());
});

test("active: with --health-path, an instance whose check fails is not offered until it passes", async () => {
  const svc = switchable("/healthz");
  svc.state.broken = true;
  const p = await sidecar("payments", "checked", svc.url, ["--health-path", "/healthz"]);
  await Bun.sleep(1500); // registered and heartbeating, but never offered while the check fails
  expect(await offered("payments")).not.toContain(p.ports.inbound);
  svc.state.broken = false;
  expect(await eventually(async () => (await offered("payments")).includes(p.ports.inbound), 5000)).toBe(true);
});
