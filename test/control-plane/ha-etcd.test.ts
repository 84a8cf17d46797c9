/**
 * High availability on a real 3-member etcd cluster with 3 control-plane replicas:
 * one replica and one etcd member are killed while traffic flows and manifests change.
 * No request fails, no applied manifest is lost, and every replica serves every change.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { tempDir } from "../helpers/cli.ts";
import { eventually, serviceManifest, startControlPlane, type TestControlPlane } from "../helpers/control-plane.ts";
import { etcdMissing, startEtcdCluster, type EtcdCluster } from "../helpers/etcd.ts";
import { echoService, type EchoService } from "../helpers/mesh-fixture.ts";
import { startMesh, stopAll } from "../helpers/procs.ts";
import { endpointsSeenBy, steadyTraffic } from "../helpers/traffic.ts";

const tmp = tempDir("mesh-ha-");
const echoes: EchoService[] = [];
let etcd: EtcdCluster;
let replicas: TestControlPlane[];

beforeAll(async () => {
  const missing = etcdMissing();
  if (missing) throw new Error(missing);
  etcd = await startEtcdCluster(3);
  const store = ["--store", "etcd", ...etcd.endpoints.flatMap((e) => ["--etcd-endpoint", e])];
  // The first replica creates the CA; the others share its directory, as operators would copy it.
  replicas = [await startControlPlane(tmp.path, store, "cp0")];
  replicas.push(...(await Promise.all([startControlPlane(tmp.path, store, "cp1"), startControlPlane(tmp.path, store, "cp2")])));
  await replicas[0]!.apply(serviceManifest("orders"), serviceManifest("payments"));
}, 60_000);
afterAll(async () => {
  await stopAll();
  await etcd?.stop();
  for (const e of echoes) e.server.stop(true);
  tmp.cleanup();
});

async function sidecar(service: string, instance: string) {
  const echo = echoService(`${service}-${instance}`);
  echoes.push(echo);
  const flags = await replicas[0]!.proxyFlags(service, tmp.path);
  const urls = replicas.flatMap((r) => ["--control-plane", `https://127.0.0.1:${r.ports.api}`]);
  const p = await startMesh([
    "proxy", "--service", service, "--upstream", echo.url, "--certs-dir", join(tmp.path, "certs", `${service}-${instance}`),
    "--inbound", "127.0.0.1:0", "--outbound", "127.0.0.1:0", "--admin", "127.0.0.1:0",
    ...flags.filter((f, i) => f !== "--control-plane" && flags[i - 1] !== "--control-plane"), ...urls,
  ]);
  return { ...p, echo, ports: p.ready as { inbound: number; outbound: number; admin: number } };
}

const policy = (i: number) => ({
  apiVersion: "mesh.dev/v1alpha1",
  kind: "DestinationPolicy",
  metadata: { name: `payments-${i}`, namespace: "default" },
  spec: { service: "payments", timeouts: { request: `${10 + i}s` } },
});

test("a replica and an etcd member die under traffic and config changes: no failed request, no lost manifest", async () => {
  const payments = [await sidecar("payments", "1"), await sidecar("payments", "2")];
  const orders = await sidecar("orders", "1");
  expect(await eventually(async () => (await endpointsSeenBy(orders.ports.admin, "payments")).length === 2, 15_000)).toBe(true);

  const traffic = steadyTraffic(orders.ports.outbound, "payments");

  // Config changes through every replica, before and after the failures.
  const applied: number[] = [];
  const applyVia = async (r: TestControlPlane, i: number) => {
    await r.apply(policy(i));
    applied.push(i);
  };
  for (let i = 0; i < 6; i++) await applyVia(replicas[i % 3]!, i);
  // The replica every proxy is connected to (the first URL each was given), and the etcd
  // member each replica talks to first.
  replicas[0]!.proc.kill("SIGKILL");
  await replicas[0]!.proc.exited;
  await etcd.kill(0);
  for (let i = 6; i < 12; i++) await applyVia(i % 2 ? replicas[1]! : replicas[2]!, i);
  await Bun.sleep(4000); // past the lease TTL: registrations must have been kept alive through the survivors
  const { sent, failures } = await traffic.stop();
  expect(failures).toEqual([]);
  expect(sent).toBeGreaterThan(200);
  expect(await endpointsSeenBy(orders.ports.admin, "payments")).toHaveLength(2);
  for (const p of payments) expect(p.echo.hits).toBeGreaterThan(20);
  for (const r of [replicas[1]!, replicas[2]!]) {
    const got = (await (await r.admin("GET", "/v1/manifests?kind=DestinationPolicy")).json()) as { items: { metadata: { name: string } }[] };
    expect(got.items.map((m) => m.metadata.name).sort()).toEqual(applied.map((i) => `payments-${i}`).sort());
  }
  // Every proxy follows the latest version, whichever replica it is on now.
  expect(
    await eventually(async () => {
      const { items } = (await (await replicas[2]!.admin("GET", "/v1/proxies")).json()) as { items: { acked?: string; latest: string }[] };
      return items.length === 3 && items.every((p) => p.acked === p.latest);
    }, 15_000),
  ).toBe(true);
}, 120_000);
