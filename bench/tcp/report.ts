/** The readable report on stdout: per-load medians (round trips, then bulk), the ratios, what was not measured, and cleanup. */
import { int, mb, ms, table } from "../format.ts";
import { pct, perProxy, spread } from "../grpc/report.ts";
import type { Level, Ratio, Summary } from "./results.ts";

export interface Meta {
  date: string;
  host: { cpus: number; kernel: string; loadAverage: number[] };
  mesh: string;
  meshVersion: string;
  haproxy: string | null;
  loader: string;
  echo: string;
  quick: boolean;
  rounds: number;
  durationS: number;
  warmupS: number;
  primeS: number;
  loads: string[];
}

const us = (n: number) => (Number.isFinite(n) ? int(n) : "-");

function shares(l: Level): string {
  const { client, echo, ...proxies } = l.coreShare;
  return [pct(client), pct(echo), ...Object.values(proxies).map(pct)].join(" / ");
}

function rows(summaries: Summary[], loads: string[], kind: Level["kind"], cells: (l: Level) => string[]): string[][] {
  const out: string[][] = [];
  for (const load of loads)
    for (const s of summaries) {
      const l = s.levels.find((x) => x.load === load);
      if (s.status === "ok" && l && l.kind === kind) out.push([s.title, load, ...cells(l), perProxy(l.rssPeakMb, mb), perProxy(l.privatePeakMb, mb), shares(l), pct(l.machineIdle), String(l.errors)]);
    }
  return out;
}

const COMMON = ["peak RSS MB", "peak private MB", "core share: client / echo / proxies", "machine idle", "errors"];

function roundTripTable(summaries: Summary[], loads: string[]): string {
  const header = ["topology", "load", "round trips/s", "p50 µs", "p99 µs", "max µs", "proxy CPU ms/1k", ...COMMON];
  return table(header, rows(summaries, loads, "rr", (l) => [int(l.perSecond), us(l.p50Us), us(l.p99Us), us(l.maxUs), ms(l.cpuMsPer1k)]));
}

function bulkTable(summaries: Summary[], loads: string[]): string {
  const header = ["topology", "load", "MB/s", "transfers", "proxy CPU ms/MiB", ...COMMON];
  return table(header, rows(summaries, loads, "bulk", (l) => [int(l.mbPerSec), String(l.transfers), ms(l.cpuMsPerMiB)]));
}

function ratioTable(list: Ratio[], summaries: Summary[]): string {
  const name = (id: string) => summaries.find((s) => s.id === id)?.title ?? id;
  const body = list.map((r) => [`${name(r.subject)} / ${name(r.reference)}`, r.load, spread(r.rate), spread(r.p50), spread(r.p99), spread(r.cpu), r.rss === undefined ? "-" : `${r.rss.toFixed(2)}x`]);
  return table(["ratio (median of per-round ratios, lowest–highest round)", "load", "round trips/s or MB/s", "p50", "p99", "proxy CPU", "peak RSS (pair)"], body);
}

export function render(meta: Meta, summaries: Summary[], ratioList: Ratio[], cleanup: string): string {
  const notRun = summaries.filter((s) => s.status !== "ok").map((s) => `  ${s.title}: ${s.status} — ${(s.reason ?? "").split("\n").join("\n    ")}`);
  const failures = summaries.flatMap((s) => s.levels.filter((l) => l.errors > 0).map((l) => `  ${s.title}, ${l.load}: ${l.errors} errors; ${l.errorSample.join("; ")}`));
  return [
    `mesh opaque TCP bench ${meta.quick ? "(quick smoke test: timings are not meaningful)" : ""}`.trim(),
    `  ${meta.date} · ${meta.host.cpus} CPUs · Linux ${meta.host.kernel} · load average ${meta.host.loadAverage.map((n) => n.toFixed(2)).join(" ")}`,
    `  mesh: ${meta.mesh} · ${meta.meshVersion} · haproxy: ${meta.haproxy ?? "not installed"}`,
    `  load: ${meta.loader}`,
    `  ${meta.rounds} interleaved round(s) × ${meta.durationS} s per cell after ${meta.warmupS} s warm-up, each topology primed ${meta.primeS} s first · medians across rounds`,
    `  echo: ${meta.echo}`,
    "",
    roundTripTable(summaries, meta.loads),
    "",
    bulkTable(summaries, meta.loads),
    "",
    "  rr cN: N persistent connections, each sending a 64-byte message and waiting for its whole echo before the next;",
    "  p50/p99 of one round trip (median over rounds), max: the worst of all rounds. bulk: one connection at a time",
    "  sends N MiB and reads the echo back (checked byte for byte); MB/s = 10^6 bytes one way per second of transfer.",
    "  Proxy CPU: user+system of the topology's proxies, read at the edges of the client's measured window, per 1000",
    "  round trips or per MiB one way. RSS: VmRSS per proxy (caller / callee), peak over every round of the load;",
    "  private: its RssAnon part. Core share: CPU time of each process over the window (100% = one core).",
    "  errors: connections the client saw fail (reset, early end, wrong or missing echo, no FIN back), plus for mesh",
    "  connections a sidecar ended other than in order or did not count (mesh_tcp_connections_total by result).",
    "",
    ratioTable(ratioList, summaries),
    ...(failures.length ? ["", "errors:", ...failures] : []),
    ...(notRun.length ? ["", "not measured:", ...notRun] : []),
    "",
    cleanup,
  ].join("\n");
}
