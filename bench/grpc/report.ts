/** The readable report on stdout: per-cell medians, the ratios, what was not measured, and cleanup. */
import { int, mb, ms, table } from "../format.ts";
import type { Ratio, Spread, Summary } from "./results.ts";

export interface Meta {
  date: string;
  host: { cpus: number; kernel: string; loadAverage: number[] };
  mesh: string;
  meshVersion: string;
  loader: string;
  nginx: string | null;
  service: string;
  quick: boolean;
  rounds: number;
  durationS: number;
  warmupS: number;
  primeS: number;
  shapes: string[];
}

/** One value per proxy, `outbound / inbound` (also used by bench/tcp/). */
export const perProxy = (m: Record<string, number>, format: (n: number) => string) => Object.values(m).map(format).join(" / ") || "-";
/** A share as a whole percentage (also used by bench/tcp/). */
export const pct = (n: number | undefined) => (n === undefined || !Number.isFinite(n) ? "-" : `${Math.round(n * 100)}%`);

function resultsTable(summaries: Summary[], shapes: string[]): string {
  const header = ["topology", "shape", "req/s", "mean ms", "max ms", "proxy CPU ms/1k", "peak RSS MB", "peak private MB", "core share: h2load / service / proxies", "machine idle", "errors"];
  const rows: string[][] = [];
  for (const shape of shapes)
    for (const s of summaries) {
      const l = s.levels.find((x) => x.shape === shape);
      if (s.status !== "ok" || !l) continue;
      const { h2load, service, ...proxies } = l.coreShare;
      const share = [pct(h2load), pct(service), ...Object.values(proxies).map(pct)].join(" / ");
      rows.push([s.title, shape, int(l.reqPerSec), ms(l.meanMs), ms(l.maxMs), ms(l.cpuMsPer1k), perProxy(l.rssPeakMb, mb), perProxy(l.privatePeakMb, mb), share, pct(l.machineIdle), String(l.errors)]);
    }
  return table(header, rows);
}

/** A ratio's median and, over several rounds, its lowest–highest (also used by bench/tcp/). */
export function spread(s: Spread | undefined): string {
  if (!s) return "-";
  return s.rounds > 1 ? `${s.median.toFixed(2)}x (${s.low.toFixed(2)}–${s.high.toFixed(2)})` : `${s.median.toFixed(2)}x`;
}

function ratioTable(list: Ratio[], summaries: Summary[]): string {
  const name = (id: string) => summaries.find((s) => s.id === id)?.title ?? id;
  const rows = list.map((r) => [`${name(r.subject)} / ${name(r.reference)}`, r.shape, spread(r.reqPerSec), spread(r.meanMs), spread(r.cpuPer1k), r.rss === undefined ? "-" : `${r.rss.toFixed(2)}x`]);
  return table(["ratio (median of per-round ratios, lowest–highest round)", "shape", "req/s", "mean latency", "proxy CPU/1k", "peak RSS (pair)"], rows);
}

export function render(meta: Meta, summaries: Summary[], ratioList: Ratio[], cleanup: string): string {
  const notRun = summaries.filter((s) => s.status !== "ok").map((s) => `  ${s.title}: ${s.status} — ${(s.reason ?? "").split("\n").join("\n    ")}`);
  const seen = summaries.filter((s) => s.seen).map((s) => `  ${s.title}: ${s.seen}`);
  return [
    `mesh gRPC bench ${meta.quick ? "(quick smoke test: timings are not meaningful)" : ""}`.trim(),
    `  ${meta.date} · ${meta.host.cpus} CPUs · Linux ${meta.host.kernel} · load average ${meta.host.loadAverage.map((n) => n.toFixed(2)).join(" ")}`,
    `  mesh: ${meta.mesh} · ${meta.meshVersion}`,
    `  load: ${meta.loader} · ${meta.rounds} interleaved round(s) × ${meta.durationS} s per cell after ${meta.warmupS} s warm-up, each topology primed ${meta.primeS} s first · medians across rounds`,
    `  service: ${meta.service} · nginx: ${meta.nginx ?? "not installed"}`,
    "",
    resultsTable(summaries, meta.shapes),
    "",
    "  shape: h2load connections x concurrent streams per connection. mean/max: h2load's time for request (max: worst over",
    "  all rounds). Proxy CPU: user+system of the topology's proxy processes (nginx: master + worker) per 1000 completed",
    "  requests, read at the start and end of h2load's measured window. RSS: VmRSS per proxy (outbound / inbound), peak",
    "  over every round; private: its RssAnon part. Core share: CPU time of each process over the window's wall time",
    "  (100% = one core; h2load's over its whole run). Machine idle: the share of all cores left idle in the window.",
    "  errors: h2load's failed + errored + timeout, plus gRPC errors the proxies answered themselves on HTTP 200",
    "  (mesh_grpc_responses_total), which h2load cannot see, and any successes beyond the calls the service answered.",
    "",
    ratioTable(ratioList, summaries),
    "",
    "readiness check (grpc-js, 5 calls on one connection):",
    ...seen,
    ...(notRun.length ? ["", "not measured:", ...notRun] : []),
    "",
    cleanup,
  ].join("\n");
}
