/**
 * `mesh redirect`: the rules it writes, the plans it refuses, and, across real network
 * namespaces with the system's iptables, a service that calls `http://payments/charge`
 * with no HTTP_PROXY reaching payments over the mesh's mTLS. The orders sidecar runs
 * under a group of its own (1337), whose connections the rules leave alone: the sidecar's
 * calls to payments' inbound are inside the redirected range too. With --transparent it
 * also carries raw TCP sent to payments' virtual address at its tcp port.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { mesh } from "../helpers/cli.ts";
import { fixtureFor } from "../helpers/mesh-fixture.ts";
import type { Host } from "../helpers/netns.ts";
import { PROXY_GID, redirectLab, type RedirectLab } from "../helpers/redirect-lab.ts";
import { restoreInput, type RedirectPlan } from "../../src/redirect/rules.ts";

const TCP_EXCHANGE = join(import.meta.dir, "..", "helpers", "tcp-exchange.ts");

const plan = (over: Partial<RedirectPlan>): RedirectPlan => ({ outboundPort: 15001, proxyUid: 1337, proxyGid: undefined, ports: undefined, cidrs: undefined, excludeCidrs: [], excludePorts: [], ...over });

describe("rules", () => {
  test("the sidecar's user and loopback first, then exclusions, then what is redirected", () => {
    expect(restoreInput(plan({ proxyGid: 7, ports: [80], excludeCidrs: ["10.0.0.10/32", "fd00::1"], excludePorts: [22, 2379] }), 4)).toBe(
      [
        "*nat",
        ":MESH_OUTPUT - [0:0]",
        ":MESH_REDIRECT - [0:0]",
        "-A MESH_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
        "-A MESH_OUTPUT -m owner --uid-owner 1337 -j RETURN",
        "-A MESH_OUTPUT -m owner --gid-owner 7 -j RETURN",
        "-A MESH_OUTPUT -d 127.0.0.0/8 -j RETURN",
        "-A MESH_OUTPUT -d 10.0.0.10/32 -j RETURN",
        "-A MESH_OUTPUT -p tcp -m multiport --dports 22,2379 -j RETURN",
        "-A MESH_OUTPUT -d 0.0.0.0/0 -p tcp --dport 80 -j MESH_REDIRECT",
        "# the hook into OUTPUT: 'mesh redirect' adds it only when absent; leave it out if OUTPUT already jumps to MESH_OUTPUT",
        "-A OUTPUT -p tcp -j MESH_OUTPUT",
        "COMMIT",
        "",
      ].join("\n"),
    );
  });

  test("the hook is left out when OUTPUT already has it; --dry-run prints it, so its rules see traffic as printed", async () => {
    const hook = "-A OUTPUT -p tcp -j MESH_OUTPUT";
    expect(restoreInput(plan({ ports: [80] }), 4, true)).not.toContain(hook);
    const dry = await mesh("redirect", "--proxy-uid", "1337", "--cidrs", "10.96.0.0/12,fd00::/8", "--dry-run");
    expect(dry.out.split("\n").filter((l) => l === hook)).toHaveLength(2);
  });

  test("each family gets its own CIDRs; none of a family, no rules for it; more than 15 ports, several matches", () => {
    const mixed = plan({ cidrs: ["10.96.0.0/12", "fd00::/8"] });
    expect(restoreInput(mixed, 4)).toContain("-A MESH_OUTPUT -d 10.96.0.0/12 -p tcp -j MESH_REDIRECT");
    expect(restoreInput(mixed, 6)).toContain("-A MESH_OUTPUT -d fd00::/8 -p tcp -j MESH_REDIRECT");
    expect(restoreInput(mixed, 6)).toContain("-A MESH_OUTPUT -d ::1/128 -j RETURN");
    expect(restoreInput(plan({ cidrs: ["fd00::/8"] }), 4)).toBeUndefined();
    const many = restoreInput(plan({ ports: Array.from({ length: 20 }, (_, i) => 8000 + i) }), 4)!;
    expect(many.split("\n").filter((l) => l.includes("MESH_REDIRECT") && l.includes("multiport")).map((l) => l.split("--dports ")[1]!.split(" ")[0]!.split(",").length)).toEqual([15, 5]);
  });

  test("a plan that would loop the sidecar's own calls, or redirect everything unasked, is refused; so is a bad port or CIDR", async () => {
    const refused = async (...args: string[]) => (await mesh("redirect", ...args, "--dry-run")).err.split("\n")[0];
    expect(await refused("--cidrs", "10.96.0.0/12")).toStartWith("error: --proxy-uid: name the sidecar's user or group");
    expect(await refused("--proxy-uid", "1337")).toStartWith("error: --ports: say which calls to redirect");
    expect(await refused("--proxy-uid", "x", "--ports", "80")).toBe('error: --proxy-uid: expected a numeric id, got "x"');
    expect(await refused("--proxy-uid", "1", "--ports", "80,,81")).toBe('error: --ports: expected a comma-separated list without empty items, got "80,,81"');
    expect(await refused("--proxy-uid", "1", "--ports", "0")).toBe('error: --ports: expected a port 1-65535, got "0"');
    expect(await refused("--proxy-uid", "1", "--cidrs", "10.0.0.0/33")).toBe('error: --cidrs: "10.0.0.0/33": the prefix length must be 0-32');
    expect(await refused("--proxy-uid", "1", "--cidrs", "payments")).toBe('error: --cidrs: expected an address or CIDR like 10.96.0.0/12 or fd00::/8, got "payments"');
    const dry = await mesh("redirect", "--proxy-uid", "1337", "--cidrs", "10.96.0.0/12,fd00::/8", "--dry-run");
    expect([dry.code, dry.out.includes("# iptables-restore --noflush"), dry.out.includes("# ip6tables-restore --noflush")]).toEqual([0, true, true]);
  });
});

describe("in a network namespace", () => {
  const fx = fixtureFor("orders", "payments");
  let lab: RedirectLab;
  let orders: Host;
  let payments: Host;
  /** payments' virtual address (Service spec.addresses). */
  let vip: string;

  const inNs = (host: Host, ...command: string[]) => lab.inNs(host, ...command);
  const redirect = (...args: string[]) => lab.redirect(...args);
  const natRules = () => inNs(orders, "iptables", "-t", "nat", "-S").stdout.split("\n");
  /** The service's call, as it would make it: by name, plain HTTP, no proxy. "payments" resolves to payments' host, as DNS would. */
  const callPayments = () => inNs(orders, "curl", "-s", "-m", "5", "--noproxy", "*", "--resolve", `payments:80:${payments.address}`, "http://payments/charge");

  beforeAll(async () => {
    lab = await redirectLab(fx, ["--transparent"]);
    ({ orders, payments, vip } = lab);
  });
  afterAll(() => lab?.destroy());

  test("without the rules, a call by name goes straight to the address and finds nothing there", () => {
    expect(callPayments().stdout).toBe("");
  });

  test("with them, it reaches payments over mTLS, as orders; the sidecar's own calls into the same range are left alone", () => {
    const r = redirect("--proxy-gid", PROXY_GID, "--cidrs", `${payments.address.replace(/\.\d+$/, ".0")}/24`);
    expect([r.status, r.stdout.trim()]).toEqual([0, `redirecting TCP to ${payments.address.replace(/\.\d+$/, ".0")}/24 to 127.0.0.1:15001 (IPv4); the sidecar's group ${PROXY_GID} and loopback are left alone`]);
    expect(JSON.parse(callPayments().stdout)).toMatchObject({ service: "payments", caller: "spiffe://mesh.local/ns/default/sa/orders" });
  });

  test("--transparent: raw TCP to payments' address at its tcp port is carried to its service, half-close and all", () => {
    const r = inNs(orders, process.execPath, TCP_EXCHANGE, vip, "7000", "hello");
    expect(JSON.parse(r.stdout)).toEqual({ text: "hellobye 5" });
  });

  test("--transparent: at any other port of the address a connection is read as HTTP; a call whose Host is the address goes to payments", () => {
    const notTcp = inNs(orders, process.execPath, TCP_EXCHANGE, vip, "7001", "hello\r\n\r\n");
    expect((JSON.parse(notTcp.stdout) as { text: string }).text).toStartWith("HTTP/1.1 400");
    const byAddress = inNs(orders, "curl", "-s", "-m", "5", "--noproxy", "*", `http://${vip}/x`);
    expect(JSON.parse(byAddress.stdout)).toMatchObject({ service: "payments", caller: "spiffe://mesh.local/ns/default/sa/orders", asked: vip });
  });

  test("applying again replaces the rules: one hook, the new ports", () => {
    const r = redirect("--proxy-gid", PROXY_GID, "--ports", "80,8080");
    expect(r.status).toBe(0);
    const rules = natRules();
    expect(rules.filter((l) => l === "-A OUTPUT -p tcp -j MESH_OUTPUT")).toHaveLength(1);
    expect(rules.filter((l) => l.endsWith("-j MESH_REDIRECT"))).toEqual(["-A MESH_OUTPUT -p tcp -m multiport --dports 80,8080 -j MESH_REDIRECT"]);
    expect(JSON.parse(callPayments().stdout)).toMatchObject({ service: "payments" });
  });

  test("a port not named is not redirected", () => {
    const other = inNs(orders, "curl", "-s", "-m", "3", "-o", "/dev/null", "-w", "%{http_code}", "--noproxy", "*", "--resolve", `payments:9090:${payments.address}`, "http://payments:9090/");
    expect(other.stdout).toBe("000");
  });

  test("--remove takes out its chains and hook and nothing else; a second --remove finds none", () => {
    expect(inNs(orders, "iptables", "-t", "nat", "-A", "OUTPUT", "-p", "udp", "--dport", "53", "-j", "RETURN").status).toBe(0);
    expect(redirect("--remove").stdout.trim()).toBe("redirect rules removed");
    const rules = natRules();
    expect(rules.some((l) => l.includes("MESH_"))).toBe(false);
    expect(rules).toContain("-A OUTPUT -p udp -m udp --dport 53 -j RETURN");
    expect(callPayments().stdout).toBe("");
    expect(redirect("--remove").stdout.trim()).toBe("no redirect rules were installed");
  });

  test("the --dry-run rules, fed to iptables-restore as printed, hook into OUTPUT and redirect", () => {
    const subnet = `${payments.address.replace(/\.\d+$/, ".0")}/24`;
    const printed = redirect("--proxy-gid", PROXY_GID, "--cidrs", subnet, "--dry-run");
    expect(printed.status).toBe(0);
    const restored = spawnSync("ip", ["netns", "exec", orders.ns, "iptables-restore", "--noflush"], { input: printed.stdout, encoding: "utf8" });
    expect([restored.status, restored.stderr]).toEqual([0, ""]);
    expect(natRules().filter((l) => l === "-A OUTPUT -p tcp -j MESH_OUTPUT")).toHaveLength(1);
    expect(JSON.parse(callPayments().stdout)).toMatchObject({ service: "payments" });
    expect(redirect("--remove").stdout.trim()).toBe("redirect rules removed");
  });
});
