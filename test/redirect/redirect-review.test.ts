/**
 * Review: `mesh redirect` and `mesh proxy --transparent` attacked across real
 * network namespaces with the system's iptables. orders' sidecar runs --transparent under
 * group 1337 with a small --max-connections; payments' service echoes raw TCP at its
 * Service address's tcp port. Then the rules themselves: removal of both families,
 * re-applying with another plan, and concurrent applies.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { fixtureFor } from "../helpers/mesh-fixture.ts";
import type { Host } from "../helpers/netns.ts";
import { PROXY_GID, redirectLab, type RedirectLab } from "../helpers/redirect-lab.ts";

const MAIN = join(import.meta.dir, "..", "..", "src", "main.ts");
const MAX_CONNECTIONS = 4;

/**
 * Opens `count` connections to HOST:PORT at once, writes `c<i>;` on each, holds them for
 * HOLD ms, and prints, per connection, what came back and how it ended.
 */
const HOLDER = `
const [host, port, count, hold] = process.argv.slice(2);
const one = (i) => new Promise((resolve) => {
  const r = { text: "", closed: false, error: undefined };
  let sock;
  const done = () => resolve(r);
  Bun.connect({ hostname: host, port: Number(port), allowHalfOpen: true, socket: {
    open(s) { s.write("c" + i + ";"); },
    data(_s, d) { r.text += Buffer.from(d).toString("latin1"); },
    close(_s, err) { r.closed = true; if (err) r.error ??= String(err.message ?? err); },
    error(_s, err) { r.error ??= err.message; },
    connectError(_s, err) { r.error ??= err.message; r.closed = true; },
  } }).then((s) => (sock = s), (err) => { r.error ??= err.message; r.closed = true; });
  setTimeout(() => { sock?.terminate(); done(); }, Number(hold));
});
const results = await Promise.all(Array.from({ length: Number(count) }, (_, i) => one(i)));
console.log(JSON.stringify(results));
`;

interface Held {
  text: string;
  closed: boolean;
  error?: string;
}

const fx = fixtureFor("orders", "payments");
let lab: RedirectLab;
let orders: Host;
let payments: Host;
let vip: string;
let subnet: string;
let holder: string;

const inNs = (host: Host, ...command: string[]) => lab.inNs(host, ...command);
const redirect = (...args: string[]) => lab.redirect(...args);
const rulesOf = (tool: "iptables" | "ip6tables") => inNs(orders, tool, "-t", "nat", "-S").stdout.split("\n");

beforeAll(async () => {
  lab = await redirectLab(fx, ["--transparent", "--max-connections", String(MAX_CONNECTIONS)]);
  ({ orders, payments, vip, subnet } = lab);
  holder = join(fx.tmp.path, "holder.ts");
  writeFileSync(holder, HOLDER);
  const r = redirect("--proxy-gid", PROXY_GID, "--cidrs", subnet);
  if (r.status !== 0) throw new Error(`mesh redirect: ${r.stderr}`);
});
afterAll(() => lab?.destroy());

/** `count` connections at once to payments' address at its tcp port, from orders, held `holdMs`. */
function flood(count: number, holdMs = 1500): Held[] {
  const r = inNs(orders, process.execPath, holder, vip, "7000", String(count), String(holdMs));
  if (r.status !== 0) throw new Error(`holder: ${r.stderr}`);
  return JSON.parse(r.stdout) as Held[];
}

describe("--transparent under --max-connections", () => {
  test("a flood of redirected connections: at most --max-connections are carried at once, each of those whole", () => {
    const held = flood(12);
    const carried = held.filter((h, i) => h.text === `c${i};`);
    expect(carried.length).toBeGreaterThan(0);
    expect(carried.length).toBeLessThanOrEqual(MAX_CONNECTIONS);
    // Once they are gone, the places are free again.
    const after = flood(2, 800);
    expect(after.map((h, i) => h.text === `c${i};`)).toEqual([true, true]);
  });

  test("a redirected connection to a tcp port refused over the limit is reset, as a local tcp listener's is: never answered in HTTP", () => {
    const held = flood(12);
    const refused = held.filter((h, i) => h.text !== `c${i};`);
    expect(refused.length).toBeGreaterThan(0);
    // A database client must not read "HTTP/1.1 503" as its server's bytes.
    expect(refused.filter((h) => h.text.startsWith("HTTP/")).map((h) => h.text.split("\r\n")[0])).toEqual([]);
  });
});

test("a redirected HTTP call to an address no Service has is answered no-route, never passed through", () => {
  const stranger = payments.address.replace(/\.\d+$/, ".99");
  const r = inNs(orders, "curl", "-s", "-m", "5", "--noproxy", "*", "-D", "-", "-o", "/dev/null", `http://${stranger}/x`);
  expect(r.stdout.split("\r\n")[0]).toStartWith("HTTP/1.1 404");
  expect(r.stdout.toLowerCase()).toContain("x-mesh-error: no-route");
});

describe("the rules", () => {
  test("--remove takes out the IPv6 rules too, not only the IPv4 ones", () => {
    const r = redirect("--proxy-gid", PROXY_GID, "--cidrs", `${subnet},fd00::/8`);
    expect(r.status).toBe(0);
    expect(rulesOf("iptables").some((l) => l.includes("MESH_"))).toBe(true);
    expect(rulesOf("ip6tables").some((l) => l.includes("MESH_"))).toBe(true);
    expect(redirect("--remove").stdout.trim()).toBe("redirect rules removed");
    expect(rulesOf("iptables").filter((l) => l.includes("MESH_"))).toEqual([]);
    const left = rulesOf("ip6tables").filter((l) => l.includes("MESH_"));
    inNs(orders, "ip6tables", "-t", "nat", "-D", "OUTPUT", "-p", "tcp", "-j", "MESH_OUTPUT");
    for (const chain of ["MESH_OUTPUT", "MESH_REDIRECT"]) {
      inNs(orders, "ip6tables", "-t", "nat", "-F", chain);
      inNs(orders, "ip6tables", "-t", "nat", "-X", chain);
    }
    expect(left).toEqual([]);
  });

  test("applying again replaces the rules of both families: an earlier plan's IPv6 redirect does not outlive it", () => {
    try {
      expect(redirect("--proxy-gid", PROXY_GID, "--cidrs", `${subnet},fd00::/8`).status).toBe(0);
      expect(redirect("--proxy-gid", PROXY_GID, "--cidrs", subnet).status).toBe(0);
      expect(rulesOf("iptables").filter((l) => l.endsWith("-j MESH_REDIRECT"))).toEqual([`-A MESH_OUTPUT -d ${subnet} -p tcp -j MESH_REDIRECT`]);
      expect(rulesOf("ip6tables").filter((l) => l.includes("MESH_"))).toEqual([]);
    } finally {
      // Whatever is left, by hand: the next tests start from no rules.
      redirect("--remove");
      inNs(orders, "ip6tables", "-t", "nat", "-D", "OUTPUT", "-p", "tcp", "-j", "MESH_OUTPUT");
      for (const chain of ["MESH_OUTPUT", "MESH_REDIRECT"]) {
        inNs(orders, "ip6tables", "-t", "nat", "-F", chain);
        inNs(orders, "ip6tables", "-t", "nat", "-X", chain);
      }
    }
  });

  test("mesh redirect run four times at once leaves one hook in OUTPUT", async () => {
    const hooks: number[] = [];
    for (let round = 0; round < 3; round++) {
      redirect("--remove");
      const runs = Array.from({ length: 4 }, () =>
        Bun.spawn(["ip", "netns", "exec", orders.ns, process.execPath, MAIN, "redirect", "--proxy-gid", PROXY_GID, "--ports", "80,8080"], { stdout: "ignore", stderr: "pipe" }),
      );
      await Promise.all(runs.map((p) => p.exited));
      hooks.push(rulesOf("iptables").filter((l) => l === "-A OUTPUT -p tcp -j MESH_OUTPUT").length);
    }
    expect(hooks).toEqual([1, 1, 1]);
    redirect("--remove");
    expect(rulesOf("iptables").filter((l) => l.includes("MESH_"))).toEqual([]);
  });
});
