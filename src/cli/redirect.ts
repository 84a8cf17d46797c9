/** `mesh redirect`: send a workload's outbound TCP to its sidecar's outbound listener (src/redirect/). */
import { UsageError } from "../core/errors.ts";
import { bool, str, type CommandSpec, type Parsed } from "./args.ts";
import { applyRedirect, exclusively, removeRedirect } from "../redirect/iptables.ts";
import { cidrFamily, restoreInput, type Family, type RedirectPlan } from "../redirect/rules.ts";

/** A comma-separated list of `flag`, each item checked by `parse`; undefined when the flag is absent. */
function listFlag<T>(args: Parsed, flag: string, parse: (item: string) => T): T[] | undefined {
  const text = str(args, flag);
  if (text === undefined) return undefined;
  const items = text.split(",").map((s) => s.trim());
  if (items.some((s) => s === "")) throw new UsageError(`expected a comma-separated list without empty items, got "${text}"`, `--${flag}`);
  return items.map(parse);
}

function port(flag: string) {
  return (text: string): number => {
    if (!/^\d{1,5}$/.test(text) || Number(text) < 1 || Number(text) > 65535) throw new UsageError(`expected a port 1-65535, got "${text}"`, `--${flag}`);
    return Number(text);
  };
}

function cidr(flag: string) {
  return (text: string): string => {
    const family = cidrFamily(text);
    if (typeof family === "string") throw new UsageError(family, `--${flag}`);
    return text;
  };
}

function id(args: Parsed, flag: string): number | undefined {
  const text = str(args, flag);
  if (text === undefined) return undefined;
  if (!/^\d{1,10}$/.test(text) || Number(text) > 0xfffffffe) throw new UsageError(`expected a numeric id, got "${text}"`, `--${flag}`);
  return Number(text);
}

/** The plan the flags describe, refused when it would loop the sidecar's own calls or redirect everything unasked. */
export function redirectPlan(args: Parsed): RedirectPlan {
  const plan: RedirectPlan = {
    outboundPort: port("outbound-port")(str(args, "outbound-port") ?? "15001"),
    proxyUid: id(args, "proxy-uid"),
    proxyGid: id(args, "proxy-gid"),
    ports: listFlag(args, "ports", port("ports")),
    cidrs: listFlag(args, "cidrs", cidr("cidrs")),
    excludeCidrs: listFlag(args, "exclude-cidrs", cidr("exclude-cidrs")) ?? [],
    excludePorts: listFlag(args, "exclude-ports", port("exclude-ports")) ?? [],
  };
  if (plan.proxyUid === undefined && plan.proxyGid === undefined)
    throw new UsageError("name the sidecar's user or group: its own connections must leave as they are, or its calls to other sidecars would come back to it", "--proxy-uid");
  if (plan.ports === undefined && plan.cidrs === undefined)
    throw new UsageError("say which calls to redirect: --ports (e.g. 80,8080) and/or --cidrs (e.g. the cluster's service range, 10.96.0.0/12)", "--ports");
  return plan;
}

/** The families a plan touches: IPv4 always, IPv6 when asked or when a CIDR of it is given. */
function families(args: Parsed, plan: RedirectPlan): Family[] {
  const v6 = bool(args, "ipv6") || [...(plan.cidrs ?? []), ...plan.excludeCidrs].some((c) => cidrFamily(c) === 6);
  return v6 ? [4, 6] : [4];
}

export const redirectCommand: CommandSpec = {
  name: "redirect",
  summary: "Send this network namespace's outbound calls to the sidecar's outbound listener (iptables), so services need no HTTP_PROXY.",
  description:
    "Installs nat rules in this network namespace, as istio-iptables and linkerd-init do: TCP\n" +
    "connections to --ports and/or --cidrs go to the sidecar's outbound listener, which routes\n" +
    "them by Host or :authority like any call. The sidecar's own connections (its --proxy-uid\n" +
    "or --proxy-gid) and loopback are never redirected, so the sidecar must run as a user or\n" +
    "group of its own. Applying again replaces the rules; --remove takes them out. Needs\n" +
    "root or CAP_NET_ADMIN, and iptables. Redirected calls must be plain HTTP/1.1 or HTTP/2\n" +
    "(the mesh adds mutual TLS); opaque TCP goes through --tcp-upstream listeners instead.",
  flags: [
    { name: "proxy-uid", type: "string", value: "UID", description: "The sidecar's user id: its connections are not redirected." },
    { name: "proxy-gid", type: "string", value: "GID", description: "The sidecar's group id: its connections are not redirected." },
    { name: "outbound-port", type: "string", value: "PORT", description: "The sidecar's outbound listener port (default 15001)." },
    { name: "ports", type: "string", value: "P,P…", description: "Destination ports redirected (default: every port of --cidrs)." },
    { name: "cidrs", type: "string", value: "CIDR,…", description: "Destinations redirected, e.g. a cluster's service range (default: every destination on --ports)." },
    { name: "exclude-cidrs", type: "string", value: "CIDR,…", description: "Destinations never redirected, e.g. the control plane's." },
    { name: "exclude-ports", type: "string", value: "P,P…", description: "Destination ports never redirected." },
    { name: "ipv6", type: "boolean", description: "Install the rules for IPv6 too (implied by an IPv6 CIDR)." },
    { name: "dry-run", type: "boolean", description: "Print the rules (iptables-restore input) instead of installing them." },
    { name: "remove", type: "boolean", description: "Remove the rules this command installed, and nothing else." },
  ],
  examples: [
    "mesh redirect --proxy-uid 1337 --cidrs 10.96.0.0/12",
    "mesh redirect --proxy-gid 1337 --ports 80,8080 --exclude-cidrs 10.0.0.10/32",
    "mesh redirect --remove",
  ],
  async run(args, ctx) {
    if (bool(args, "remove")) {
      const removed = exclusively(() => [removeRedirect(4), removeIpv6()]);
      ctx.out(removed.some(Boolean) ? "redirect rules removed" : "no redirect rules were installed");
      return 0;
    }
    const plan = redirectPlan(args);
    const chosen = families(args, plan);
    if (bool(args, "dry-run")) {
      for (const f of chosen) ctx.out(`# ${f === 4 ? "iptables" : "ip6tables"}-restore --noflush\n${restoreInput(plan, f) ?? "# nothing of this family to redirect\n"}`);
      return 0;
    }
    const applied = exclusively(() => {
      const installed = chosen.filter((f) => applyRedirect(plan, f));
      // An earlier plan's IPv6 rules go too: applying replaces the rules.
      if (!chosen.includes(6)) removeIpv6();
      return installed;
    });
    const what = [plan.ports && `ports ${plan.ports.join(",")}`, plan.cidrs && `to ${plan.cidrs.join(",")}`].filter(Boolean).join(" ");
    ctx.out(`redirecting TCP ${what} to 127.0.0.1:${plan.outboundPort} (IPv${applied.join(" and IPv")}); the sidecar's ${plan.proxyUid !== undefined ? `user ${plan.proxyUid}` : `group ${plan.proxyGid}`} and loopback are left alone`);
    return 0;
  },
};

/** IPv6 rules, where they could have been put: without ip6tables, or without IPv6 nat in the kernel, there are none of ours. */
function removeIpv6(): boolean {
  if (Bun.which("ip6tables") === null) return false;
  try {
    return removeRedirect(6);
  } catch {
    return false;
  }
}
