/**
 * The netfilter rules that send a workload's outbound TCP to its sidecar's outbound
 * listener, so a service that calls `http://payments/charge` is meshed without setting
 * HTTP_PROXY (what istio-iptables and linkerd-init install). The sidecar then routes by
 * the call's Host or :authority, as it does for any call.
 *
 * The rules live in two chains of the nat table, hooked into OUTPUT. In order:
 * - the sidecar's own connections (its user or group) leave untouched, or its calls to
 *   other sidecars would come back to it;
 * - so does loopback (the service's local calls, the sidecar's to the service);
 * - then the excluded destinations and ports;
 * - what is left, to the chosen destinations and ports, is redirected.
 *
 * Written for iptables-restore with --noflush: declaring a chain flushes it, so applying
 * again replaces the rules in one transaction and leaves every other rule alone. The hook
 * is the one rule outside the two chains, so nothing flushes it: it is added only when
 * absent, or every run would add another.
 */
import { isIP } from "node:net";

export const OUTPUT_CHAIN = "MESH_OUTPUT";
export const REDIRECT_CHAIN = "MESH_REDIRECT";
/** The rule that hooks the chains into OUTPUT, as `iptables -S` prints it. */
export const HOOK = `-A OUTPUT -p tcp -j ${OUTPUT_CHAIN}`;

export type Family = 4 | 6;

export interface RedirectPlan {
  /** The sidecar's outbound listener port (on loopback: REDIRECT sends there). */
  outboundPort: number;
  /** The sidecar's user and group: connections of either are never redirected. */
  proxyUid: number | undefined;
  proxyGid: number | undefined;
  /** Destination ports redirected; undefined: every port. */
  ports: readonly number[] | undefined;
  /** Destinations redirected (CIDRs, both families); undefined: every destination. */
  cidrs: readonly string[] | undefined;
  excludeCidrs: readonly string[];
  excludePorts: readonly number[];
}

const LOOPBACK: Record<Family, string> = { 4: "127.0.0.0/8", 6: "::1/128" };
const EVERYWHERE: Record<Family, string> = { 4: "0.0.0.0/0", 6: "::/0" };
/** What one multiport match takes (iptables' limit). */
const MULTIPORT_MAX = 15;

/** The address family of a CIDR, or a reason it is not one. */
export function cidrFamily(cidr: string): Family | string {
  const [address, prefix, extra] = cidr.split("/");
  const family = isIP(address ?? "");
  if (family === 0 || extra !== undefined) return `expected an address or CIDR like 10.96.0.0/12 or fd00::/8, got "${cidr}"`;
  const max = family === 4 ? 32 : 128;
  if (prefix !== undefined && (!/^\d{1,3}$/.test(prefix) || Number(prefix) > max)) return `"${cidr}": the prefix length must be 0-${max}`;
  return family as Family;
}

/** Precedes the hook in the rules: whoever feeds them to iptables-restore by hand must know it is not replaced. */
export const HOOK_COMMENT = `# the hook into OUTPUT: 'mesh redirect' adds it only when absent; leave it out if OUTPUT already jumps to ${OUTPUT_CHAIN}`;

/**
 * The lines for iptables-restore (family 4) or ip6tables-restore (6); undefined when the plan
 * redirects nothing of this family. `hooked`: OUTPUT already jumps to the chains, so the hook is left out.
 */
export function restoreInput(plan: RedirectPlan, family: Family, hooked = false): string | undefined {
  const ofFamily = (cidrs: readonly string[]) => cidrs.filter((c) => cidrFamily(c) === family);
  const targets = plan.cidrs === undefined ? [EVERYWHERE[family]] : ofFamily(plan.cidrs);
  if (targets.length === 0) return undefined;
  const lines = ["*nat", `:${OUTPUT_CHAIN} - [0:0]`, `:${REDIRECT_CHAIN} - [0:0]`, `-A ${REDIRECT_CHAIN} -p tcp -j REDIRECT --to-ports ${plan.outboundPort}`];
  const out = (rule: string) => lines.push(`-A ${OUTPUT_CHAIN} ${rule}`);
  if (plan.proxyUid !== undefined) out(`-m owner --uid-owner ${plan.proxyUid} -j RETURN`);
  if (plan.proxyGid !== undefined) out(`-m owner --gid-owner ${plan.proxyGid} -j RETURN`);
  out(`-d ${LOOPBACK[family]} -j RETURN`);
  for (const cidr of ofFamily(plan.excludeCidrs)) out(`-d ${cidr} -j RETURN`);
  for (const ports of multiports(plan.excludePorts)) out(`-p tcp ${ports} -j RETURN`);
  const portMatches = plan.ports === undefined ? [""] : multiports(plan.ports).map((p) => ` ${p}`);
  for (const cidr of targets) for (const ports of portMatches) out(`-d ${cidr} -p tcp${ports} -j ${REDIRECT_CHAIN}`);
  if (!hooked) lines.push(HOOK_COMMENT, HOOK);
  lines.push("COMMIT", "");
  return lines.join("\n");
}

/** `--dport P`, or multiport matches of at most 15 ports each. */
function multiports(ports: readonly number[]): string[] {
  if (ports.length === 1) return [`--dport ${ports[0]}`];
  const matches: string[] = [];
  for (let i = 0; i < ports.length; i += MULTIPORT_MAX) matches.push(`-m multiport --dports ${ports.slice(i, i + MULTIPORT_MAX).join(",")}`);
  return matches;
}
