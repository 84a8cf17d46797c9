/** The printed report: the set-up facts, memory per subscribed proxy, one column per round, and any failure. */
import { int, mb, table } from "../format.ts";
import { median } from "../stats.ts";
import type { Options } from "./args.ts";
import type { RoundResult, SubscribeResult } from "./phases.ts";
import type { SimErrors } from "./sim-protocol.ts";

export interface Meta {
  date: string;
  mesh: string;
  cpus: number;
  fdLimit: number;
  options: Options;
}

/** What a run produced, complete or not: a failure keeps what was measured before it. */
export interface Results {
  meta: Meta;
  subscription?: SubscribeResult;
  rounds: RoundResult[];
  failure?: string;
  /** Every error the simulated proxies saw in the run, by kind and message. */
  errors?: SimErrors;
}

const kv = (rows: [string, string][]) => rows.map(([k, v]) => `  ${k.padEnd(40)} ${v}`).join("\n");

function subscription(sub: SubscribeResult): string {
  return kv([
    ["register all (POST /v1/register)", `${int(sub.registerMs)} ms`],
    ["subscribe → every proxy acked", `${int(sub.syncMs)} ms`],
    ["CPU ms, register + subscribe", `control plane ${int(sub.cpCpuMs)}, simulators ${int(sub.simCpuMs)}`],
    ["GET /v1/proxies (all N listed)", `${int(sub.listMs)} ms`],
    ["control-plane RSS before / after", `${mb(sub.rssBeforeMb)} / ${mb(sub.rssAfterMb)} MB`],
    ["memory per subscribed proxy", `${mb(sub.perProxyKb)} KB`],
    ["control-plane open fds before / after", `${int(sub.fdsBefore)} / ${int(sub.fdsAfter)}`],
  ]);
}

function rounds(list: RoundResult[]): string {
  const many = list.length > 1;
  const row = (label: string, f: (r: RoundResult) => number, fmt = int) => [label, ...list.map((r) => fmt(f(r))), ...(many ? [fmt(median(list.map(f)))] : [])];
  return table(["ms from apply (t0)", ...list.map((r) => `round ${r.round}`), ...(many ? ["median"] : [])], [
    row("apply (PUT /v1/manifests)", (r) => r.applyMs),
    row("received p50", (r) => r.received.p50),
    row("received p99", (r) => r.received.p99),
    row("received max", (r) => r.received.max),
    row("acked p50", (r) => r.acked.p50),
    row("acked p99", (r) => r.acked.p99),
    row("last ack (max)", (r) => r.acked.max),
    row("CPU ms control plane", (r) => r.cpCpuMs),
    row("CPU ms simulators", (r) => r.simCpuMs),
    row("CP peak RSS MB", (r) => r.peakRssMb, mb),
    row("GET /v1/proxies ms", (r) => r.listMs),
    row("simulator errors", (r) => r.errors),
  ]);
}

export function render(res: Results, cleanup: string): string {
  const o = res.meta.options;
  return [
    `control-plane scale: ${o.proxies} proxies, ${o.services} services, ${o.simulators} simulators, client per ${o.clientPer}, lease ${o.leaseTtl}`,
    `${res.meta.mesh}; ${res.meta.cpus} CPUs (shared by the control plane and the simulators); open-files limit ${res.meta.fdLimit}; ${res.meta.date}`,
    "",
    "subscription",
    res.subscription ? subscription(res.subscription) : "  not completed",
    "",
    `policy change → every proxy acked (${res.rounds.length} of ${o.rounds} rounds)`,
    res.rounds.length ? rounds(res.rounds) : "  none completed",
    ...(res.errors && Object.keys(res.errors.messages).length
      ? ["", "simulator errors, whole run (digits shown as N):", ...Object.entries(res.errors.messages).sort((a, b) => b[1] - a[1]).slice(0, 8).map(([m, n]) => `  ${int(n)}× ${m}`)]
      : []),
    ...(res.failure ? ["", `FAILED: ${res.failure}`] : []),
    "",
    cleanup,
  ].join("\n");
}
