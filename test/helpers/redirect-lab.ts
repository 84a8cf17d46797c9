/**
 * Two hosts for the tests of mesh redirect (network namespaces, test/helpers/netns.ts):
 * payments, a service behind its sidecar, that answers HTTP and echoes raw TCP, at a
 * virtual address (Service spec.addresses) in the hosts' subnet, with a tcp port 7000;
 * and orders, whose sidecar runs --transparent under a group of its own (PROXY_GID), so
 * rules that leave that group alone never send the sidecar's calls back to it.
 */
import { spawnSync, type SpawnSyncReturns } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import type { MeshFixture } from "./mesh-fixture.ts";
import { createLab, netnsUnavailable, type Host } from "./netns.ts";
import { startMesh, startReady } from "./procs.ts";

const MAIN = join(import.meta.dir, "..", "..", "src", "main.ts");
export const PROXY_GID = "1337";

export interface RedirectLab {
  orders: Host;
  payments: Host;
  /** payments' virtual address, no host's own. */
  vip: string;
  /** The hosts' subnet, which holds the address, as a CIDR. */
  subnet: string;
  /** Runs a command on `host`. */
  inNs(host: Host, ...command: string[]): SpawnSyncReturns<string>;
  /** `mesh redirect ARGS` on orders. */
  redirect(...args: string[]): SpawnSyncReturns<string>;
  destroy(): void;
}

/** Builds the hosts and starts both sidecars; `ordersFlags`: more flags for orders' sidecar. The rules are the test's to install. */
export async function redirectLab(fx: MeshFixture, ordersFlags: string[] = []): Promise<RedirectLab> {
  const why = netnsUnavailable();
  if (why) throw new Error(why);
  if (spawnSync("iptables", ["--version"]).status !== 0) throw new Error("iptables is not installed (apt-get install iptables)");
  const lab = createLab(2);
  const [orders, payments] = lab.hosts as [Host, Host];
  const inNs = (host: Host, ...command: string[]) => spawnSync("ip", ["netns", "exec", host.ns, ...command], { encoding: "utf8" });
  const vip = payments.address.replace(/\.\d+$/, ".200");
  try {
    const echo = await startReady([process.execPath, join(import.meta.dir, "echo-server.ts"), "payments"], { wrap: ["ip", "netns", "exec", payments.ns] });
    const ports = echo.ready as { port: number; tcpPort: number };
    const config = join(fx.tmp.path, "services.yaml");
    writeFileSync(
      config,
      `apiVersion: mesh.dev/v1alpha1\nkind: Service\nmetadata: { name: payments }\nspec:\n  addresses: [${vip}]\n` +
        `  ports: [{ name: http, port: 80 }, { name: echo, port: 7000, protocol: tcp, targetPort: ${ports.tcpPort} }]\n  endpoints: [{ address: ${payments.address}, port: 15006 }]\n`,
    );
    const certs = (service: string) => join(fx.tmp.path, "certs", service);
    const listeners = (inbound: string) => ["--inbound", inbound, "--outbound", "127.0.0.1:15001", "--admin", "127.0.0.1:15000", "--config", config];
    await startMesh(["proxy", "--service", "payments", "--upstream", `http://127.0.0.1:${ports.port}`, "--certs-dir", certs("payments"), ...listeners(`${payments.address}:15006`)], {
      wrap: ["ip", "netns", "exec", payments.ns],
    });
    await startMesh(["proxy", "--service", "orders", "--upstream", "http://127.0.0.1:9", "--certs-dir", certs("orders"), ...listeners("127.0.0.1:15006"), ...ordersFlags], {
      wrap: ["ip", "netns", "exec", orders.ns, "setpriv", `--regid=${PROXY_GID}`, "--clear-groups"],
    });
  } catch (err) {
    lab.destroy();
    throw err;
  }
  return {
    orders,
    payments,
    vip,
    subnet: `${payments.address.replace(/\.\d+$/, ".0")}/24`,
    inNs,
    redirect: (...args) => inNs(orders, process.execPath, MAIN, "redirect", ...args),
    destroy: () => lab.destroy(),
  };
}
