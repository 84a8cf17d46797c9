/**
 * Across real network hops: three hosts (network namespaces on a bridge this test
 * creates and removes). The control plane runs on one; orders and payments, each with
 * its sidecar, on the others. Sidecars bootstrap over the network, register their host
 * addresses and call each other over mTLS.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { tempDir } from "../helpers/cli.ts";
import { eventually } from "../helpers/control-plane.ts";
import { createLab, netnsUnavailable, type NetnsLab } from "../helpers/netns.ts";
import { startMesh, startReady, stopAll } from "../helpers/procs.ts";

const MAIN = join(import.meta.dir, "..", "..", "src", "main.ts");
const tmp = tempDir("mesh-netns-");
let lab: NetnsLab;

beforeAll(() => {
  const why = netnsUnavailable();
  if (why) throw new Error(why);
  lab = createLab(3);
});
afterAll(async () => {
  await stopAll();
  lab?.destroy();
  tmp.cleanup();
});

const inNs = (ns: string) => ["ip", "netns", "exec", ns];

function meshIn(ns: string, ...args: string[]): string {
  const r = spawnSync("ip", [...inNs(ns).slice(1), process.execPath, MAIN, ...args], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`mesh ${args.join(" ")} in ${ns}: ${r.stderr}`);
  return r.stdout.trim();
}

test("control plane on one host, two services with sidecars on two others, over the bridge", async () => {
  const [cpHost, ordersHost, paymentsHost] = lab.hosts as [typeof lab.hosts[0], typeof lab.hosts[0], typeof lab.hosts[0]];
  const dataDir = join(tmp.path, "data");
  const caDir = join(tmp.path, "ca");
  await startMesh(["control-plane", "--data-dir", dataDir, "--ca-dir", caDir, "--api", `${cpHost.address}:15010`, "--bootstrap", `${cpHost.address}:15012`, "--admin", "127.0.0.1:15011"], { wrap: inNs(cpHost.ns) });
  const admin = ["--admin-url", "http://127.0.0.1:15011", "--admin-token-file", join(dataDir, "admin-token")];
  const services = join(tmp.path, "services.yaml");
  writeFileSync(services, ["orders", "payments"].map((n) => `apiVersion: mesh.dev/v1alpha1\nkind: Service\nmetadata: {name: ${n}}\nspec:\n  ports: [{name: http, port: 80}]\n`).join("---\n"));
  meshIn(cpHost.ns, "apply", "-f", services, ...admin);

  const sidecar = async (service: string, host: (typeof lab.hosts)[0]) => {
    const echo = await startReady([process.execPath, join(import.meta.dir, "..", "helpers", "echo-server.ts"), service], { wrap: inNs(host.ns) });
    const token = join(tmp.path, `${service}.token`);
    writeFileSync(token, meshIn(cpHost.ns, "join-token", "--service", service, ...admin));
    return startMesh(
      ["proxy", "--service", service, "--upstream", `http://127.0.0.1:${(echo.ready as { port: number }).port}`, "--certs-dir", join(tmp.path, "certs", service),
        "--inbound", `${host.address}:15006`, "--outbound", "127.0.0.1:15001", "--admin", "127.0.0.1:15000",
        "--control-plane", `https://${cpHost.address}:15010`, "--join-token-file", token, "--ca", join(caDir, "bundle.pem")],
      { wrap: inNs(host.ns) },
    );
  };
  await sidecar("payments", paymentsHost);
  await sidecar("orders", ordersHost);

  const curlFromOrders = (path: string) =>
    spawnSync("ip", [...inNs(ordersHost.ns).slice(1), "curl", "-s", "-m", "5", "-H", "host: payments", `http://127.0.0.1:15001${path}`], { encoding: "utf8" }).stdout;
  expect(await eventually(() => curlFromOrders("/").includes('"service":"payments"'), 15_000, 250)).toBe(true);
  const answer = JSON.parse(curlFromOrders("/pay")) as { service: string; caller: string };
  expect(answer).toMatchObject({ service: "payments", caller: "spiffe://mesh.local/ns/default/sa/orders" });

  // payments registered its host address, reached across the bridge.
  const endpoints = JSON.parse(spawnSync("ip", [...inNs(cpHost.ns).slice(1), "curl", "-s", "-H", `authorization: Bearer ${readFileSync(join(dataDir, "admin-token"), "utf8").trim()}`, "http://127.0.0.1:15011/v1/endpoints"], { encoding: "utf8" }).stdout) as {
    items: { service: string; address: string }[];
  };
  expect(endpoints.items.find((e) => e.service === "payments")?.address).toBe(paymentsHost.address);
  // Nothing but mTLS gets in: plain HTTP from the orders host to payments' inbound is refused.
  const plain = spawnSync("ip", [...inNs(ordersHost.ns).slice(1), "curl", "-s", "-m", "3", "-o", "/dev/null", "-w", "%{http_code}", `http://${paymentsHost.address}:15006/`], { encoding: "utf8" });
  expect(plain.stdout).toBe("000");
}, 60_000);
