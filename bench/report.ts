/** The readable report on stdout: results, ratios, targets, skipped rows and cleanup. */
import type { Ratio, Target } from "./compare.ts";
import { int, mb, ms, table, times } from "./format.ts";
import type { Summary } from "./results.ts";

export interface Meta {
  date: string;
  host: { cpus: number; kernel: string; loadAverage: number[] };
  mesh: string;
  meshVersion: string;
  loader: string;
  nginx: string | null;
  haproxy: string | null;
  quick: boolean;
  rounds: number;
  durationS: number;
  warmupS: number;
  connections: number[];
}

function resultsTable(summaries: Summary[], connections: number[]): string {
  const top = Math.max(...connections);
  const header = ["topology", ...connections.flatMap((n) => [`c=${n} req/s`, "p50 ms", "p99 ms"]), "idle RSS MB", "peak RSS MB", "peak private MB", "CPU ms/1k", `machine ms/1k c=${top}`, `machine idle c=${top}`, "new inbound conns", "errors"];
  const rows = summaries
    .filter((s) => s.status === "ok")
    .map((s) => {
      const cells = connections.flatMap((n) => {
        const l = s.levels.find((x) => x.connections === n);
        return [int(l?.reqPerSec), ms(l?.p50Ms), ms(l?.p99Ms)];
      });
      // Pairs show "outbound / inbound", so each proxy can be held against the limit.
      const rss = (m: Record<string, number>) => Object.values(m).map(mb).join(" / ") || "-";
      const errors = s.levels.reduce((n, l) => n + l.errors + l.non2xx, 0);
      const busiest = s.levels.find((x) => x.connections === top);
      const idle = busiest && Number.isFinite(busiest.idlePct) ? `${busiest.idlePct.toFixed(1)}%` : "-";
      return [s.title, ...cells, rss(s.rssIdleMb), rss(s.rssPeakMb), rss(s.privatePeakMb), ms(s.cpuMsPer1k), ms(busiest?.machineMsPer1k), idle, s.inboundNewConnections === undefined ? "-" : int(s.inboundNewConnections), String(errors)];
    });
  return table(header, rows);
}

function ratioTable(list: Ratio[], summaries: Summary[], connections: number[]): string {
  const name = (id: string) => summaries.find((s) => s.id === id)?.title ?? id;
  const header = ["ratio", ...connections.map((n) => `req/s c=${n}`), ...connections.map((n) => `p99 c=${n}`), "RSS", "CPU/1k"];
  const rows = list.map((r) => [
    `${name(r.subject)} / ${name(r.reference)}`,
    ...connections.map((n) => times(r.reqPerSec[n])),
    ...connections.map((n) => times(r.p99[n])),
    times(r.rss),
    times(r.cpuPer1k),
  ]);
  return table(header, rows);
}

function targetTable(list: Target[]): string {
  const verdict = (t: Target) => (t.met === undefined ? "n/a" : t.met ? "met" : "NOT met");
  return table(["target (measured, not asserted)", "goal", "verdict", "measured"], list.map((t) => [t.name, t.goal, verdict(t), t.measured]), true);
}

export function render(meta: Meta, summaries: Summary[], ratioList: Ratio[], targetList: Target[], cleanup: string): string {
  const notRun = summaries.filter((s) => s.status !== "ok").map((s) => `  ${s.title}: ${s.status} — ${(s.reason ?? "").split("\n").join("\n    ")}`);
  return [
    `mesh bench ${meta.quick ? "(quick smoke test: timings are not meaningful)" : ""}`.trim(),
    `  ${meta.date} · ${meta.host.cpus} CPUs · Linux ${meta.host.kernel} · load average ${meta.host.loadAverage.map((n) => n.toFixed(2)).join(" ")}`,
    `  mesh: ${meta.mesh} · ${meta.meshVersion}`,
    `  load: ${meta.loader} · ${meta.rounds} interleaved round(s) × ${meta.durationS} s per cell, warm-up ${meta.warmupS} s · medians across rounds`,
    `  nginx: ${meta.nginx ?? "not installed"} · haproxy: ${meta.haproxy ?? "not installed"}`,
    "",
    resultsTable(summaries, meta.connections),
    "",
    "  RSS: VmRSS per proxy (pairs: outbound / inbound; nginx: master + worker), idle after start and peak under load. Private: the",
    "  RssAnon part of it, without the executable's pages, which every process of the same binary shares. CPU: user+system of all",
    "  the topology's proxy processes per 1000 requests, all cells. Machine: busy CPU of the whole machine (load generator, service,",
    "  proxies) per 1000 requests, and the share of CPU time left idle, at the highest concurrency: idle time under this",
    "  closed-loop load means the stages waited on each other (latency-bound), not that they ran out of CPU. New inbound",
    "  conns: TLS connections the pair's inbound accepted during the measured cells (mesh: mesh_connections_total{direction=\"inbound\"}).",
    "",
    ratioTable(ratioList, summaries, meta.connections),
    "",
    targetTable(targetList),
    ...(notRun.length ? ["", "not measured:", ...notRun] : []),
    "",
    cleanup,
  ].join("\n");
}
