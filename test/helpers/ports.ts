/**
 * Loopback ports for servers that must be told a port before they start (etcd, nginx,
 * a sidecar's listeners named on its command line). A port is picked, checked free by
 * binding it, and released for the caller to bind, so another process may take it in
 * between. Ports are picked below the kernel's ephemeral range: the kernel takes the
 * source port of every outgoing connection on the machine from that range, and a
 * port `bind(0)` handed out there could be gone to one of them before the server binds.
 */
import { readFileSync } from "node:fs";

const LOWEST = 10_000;

/** Where to pick from: below the ephemeral range when there is room, else anywhere above the privileged ports. */
function pickRange(): [number, number] {
  try {
    const low = Number(readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/)[0]);
    if (Number.isInteger(low) && low - LOWEST >= 1_000) return [LOWEST, low - 1];
  } catch {
    // not Linux: any unprivileged port
  }
  return [LOWEST, 65_535];
}

const [first, last] = pickRange();
/** Handed out by this process already: two servers of one test never get the same port. */
const given = new Set<number>();

type Held = { port: number; stop(closeActive?: boolean): void };

function bindable(port: number): Held | undefined {
  try {
    return Bun.listen({ hostname: "127.0.0.1", port, socket: { data() {} } });
  } catch {
    return undefined;
  }
}

/** `n` distinct free ports, all held at once while they are picked. */
export function freePorts(n: number): number[] {
  const held: Held[] = [];
  for (let tries = 0; held.length < n; tries++) {
    if (tries > 1_000) throw new Error(`no free loopback port found in ${first}-${last} after 1000 tries`);
    const port = first + Math.floor(Math.random() * (last - first + 1));
    if (given.has(port)) continue;
    const listener = bindable(port);
    if (listener) held.push(listener);
  }
  for (const l of held) {
    given.add(l.port);
    l.stop(true);
  }
  return held.map((l) => l.port);
}

export function freePort(): number {
  return freePorts(1)[0]!;
}
