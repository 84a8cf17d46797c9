/**
 * Separate hosts on one machine for tests: network namespaces joined by veth pairs to a
 * bridge that lives in a namespace of its own, so nothing touches the host's network.
 * Everything is named with this process's pid and removed by `destroy()`.
 */
import { spawnSync } from "node:child_process";

export interface Host {
  ns: string;
  address: string;
}

export interface NetnsLab {
  hosts: Host[];
  destroy(): void;
}

function ip(...args: string[]): void {
  const r = spawnSync("ip", args, { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`ip ${args.join(" ")}: ${r.stderr.trim() || r.error?.message}`);
}

/** Why namespaces cannot be made here, or undefined when they can. */
export function netnsUnavailable(): string | undefined {
  const probe = `meshprobe${process.pid}`;
  const r = spawnSync("ip", ["netns", "add", probe], { encoding: "utf8" });
  if (r.status !== 0) return `cannot create network namespaces (needs root and iproute2): ${r.stderr?.trim() || r.error?.message}`;
  spawnSync("ip", ["netns", "del", probe]);
  return undefined;
}

export function createLab(count: number): NetnsLab {
  const tag = `${process.pid % 100000}`;
  const subnet = `10.${200 + (process.pid % 50)}.${(process.pid >> 6) % 250}`;
  const sw = `msw${tag}`;
  const created: string[] = [];
  const destroy = () => {
    for (const ns of created.reverse()) spawnSync("ip", ["netns", "del", ns]);
  };
  try {
    ip("netns", "add", sw);
    created.push(sw);
    ip("-n", sw, "link", "add", "br0", "type", "bridge");
    ip("-n", sw, "link", "set", "br0", "up");
    const hosts: Host[] = [];
    for (let i = 1; i <= count; i++) {
      const ns = `mh${tag}x${i}`;
      const address = `${subnet}.${i}`;
      ip("netns", "add", ns);
      created.push(ns);
      ip("-n", ns, "link", "set", "lo", "up");
      ip("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", `p${i}`, "netns", sw);
      ip("-n", ns, "addr", "add", `${address}/24`, "dev", "eth0");
      ip("-n", ns, "link", "set", "eth0", "up");
      ip("-n", sw, "link", "set", `p${i}`, "master", "br0");
      ip("-n", sw, "link", "set", `p${i}`, "up");
      hosts.push({ ns, address });
    }
    return { hosts, destroy };
  } catch (err) {
    destroy();
    throw err;
  }
}
