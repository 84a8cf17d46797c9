/**
 * Cells into per-topology, per-load medians, and the ratios the report leads with, taken
 * within each round and reported as their median with the lowest and highest round, as
 * bench:grpc does (../grpc/results.ts, whose helpers these are).
 */
import { medians, peaks, spread, type Spread } from "../grpc/results.ts";
import { median } from "../stats.ts";
import type { Cell } from "./measure.ts";
import { TITLES, type TcpSetup, type TopologyId } from "./topology.ts";

export interface Level {
  load: string;
  kind: "rr" | "bulk";
  cells: number;
  /** Round trips: per second, and p50 / p99 in µs (medians over rounds); the worst round trip of all. */
  perSecond: number;
  p50Us: number;
  p99Us: number;
  maxUs: number;
  /** Bulk: MB (10^6 bytes) one way per second of transfer; transfers measured in all rounds. */
  mbPerSec: number;
  transfers: number;
  cpuMsPer1k: number;
  cpuMsPerMiB: number;
  coreShare: Record<string, number>;
  machineIdle: number;
  rssPeakMb: Record<string, number>;
  privatePeakMb: Record<string, number>;
  errors: number;
  /** What the first failures said. */
  errorSample: string[];
}

export interface Summary {
  id: TopologyId;
  title: string;
  status: "ok" | "skipped" | "failed";
  reason?: string;
  levels: Level[];
}

const med = (cells: Cell[], pick: (c: Cell) => number) => median(cells.map(pick));

function level(load: string, mine: Cell[]): Level {
  const rr = (pick: (r: Extract<Cell["client"], { kind: "rr" }>) => number) => (c: Cell) => (c.client.kind === "rr" ? pick(c.client) : NaN);
  const bulk = (pick: (r: Extract<Cell["client"], { kind: "bulk" }>) => number) => (c: Cell) => (c.client.kind === "bulk" ? pick(c.client) : NaN);
  const errorSample = mine.flatMap((c) => [
    ...c.client.errorSample,
    ...(c.proxyFailed ? [`the proxies ended ${c.proxyFailed} connections other than in order`] : []),
    ...(c.notCarried ? [`${c.notCarried} connections the client made were not counted as carried by each sidecar`] : []),
  ]);
  return {
    load,
    kind: mine[0]!.client.kind,
    cells: mine.length,
    perSecond: med(mine, rr((r) => r.perSecond)),
    p50Us: med(mine, rr((r) => r.p50Us)),
    p99Us: med(mine, rr((r) => r.p99Us)),
    maxUs: Math.max(...mine.map(rr((r) => r.maxUs))),
    mbPerSec: med(mine, bulk((r) => r.mbPerSec)),
    transfers: mine.reduce((n, c) => n + (c.client.kind === "bulk" ? c.client.transfers : 0), 0),
    cpuMsPer1k: med(mine, (c) => c.cpuMsPer1k),
    cpuMsPerMiB: med(mine, (c) => c.cpuMsPerMiB),
    coreShare: medians(mine, (c) => c.coreShare),
    machineIdle: med(mine, (c) => c.machineIdle),
    rssPeakMb: peaks(mine, (c) => c.rssPeakMb),
    privatePeakMb: peaks(mine, (c) => c.privatePeakMb),
    errors: mine.reduce((n, c) => n + c.errors, 0),
    errorSample: errorSample.slice(0, 5),
  };
}

export function summarize(setups: TcpSetup[], cells: Cell[], failures: Map<TopologyId, string>, loads: string[]): Summary[] {
  return setups.map((s) => {
    if (!s.ok) return { id: s.id, title: TITLES[s.id], status: s.status, reason: s.reason, levels: [] };
    const id = s.topology.id;
    const levels = loads.flatMap((load) => {
      const mine = cells.filter((c) => c.id === id && c.load === load);
      return mine.length ? [level(load, mine)] : [];
    });
    const failed = failures.get(id);
    return { id, title: TITLES[id], status: failed ? "failed" : "ok", reason: failed, levels };
  });
}

export interface Ratio {
  subject: TopologyId;
  reference: TopologyId;
  load: string;
  /** Round trips per second, or MB/s. */
  rate?: Spread;
  p50?: Spread;
  p99?: Spread;
  /** Proxy CPU per 1000 round trips, or per MiB. */
  cpu?: Spread;
  /** The pairs' peak RSS (both proxies together) over the whole run: not per round. */
  rss?: number;
}

const PAIRS: [TopologyId, TopologyId][] = [
  ["mesh-pair", "haproxy-pair"],
  ["mesh-pair", "direct"],
];

const rate = (c: Cell) => (c.client.kind === "rr" ? c.client.perSecond : c.client.mbPerSec);
const p = (c: Cell, which: "p50Us" | "p99Us") => (c.client.kind === "rr" ? c.client[which] : NaN);
const cpu = (c: Cell) => (c.client.kind === "rr" ? c.cpuMsPer1k : c.cpuMsPerMiB);

export function ratios(cells: Cell[], summaries: Summary[], loads: string[]): Ratio[] {
  const out: Ratio[] = [];
  const ok = (id: TopologyId) => summaries.find((s) => s.id === id)?.status === "ok";
  for (const [subject, reference] of PAIRS) {
    if (!ok(subject) || !ok(reference)) continue;
    for (const load of loads) {
      const rounds = [...new Set(cells.filter((c) => c.load === load).map((c) => c.round))];
      const byRound = rounds.flatMap((round) => {
        const a = cells.find((c) => c.id === subject && c.load === load && c.round === round);
        const b = cells.find((c) => c.id === reference && c.load === load && c.round === round);
        return a && b ? [{ a, b }] : [];
      });
      if (byRound.length === 0) continue;
      const ratio: Ratio = {
        subject,
        reference,
        load,
        rate: spread(byRound.map(({ a, b }) => rate(a) / rate(b))),
        p50: spread(byRound.map(({ a, b }) => p(a, "p50Us") / p(b, "p50Us"))),
        p99: spread(byRound.map(({ a, b }) => p(a, "p99Us") / p(b, "p99Us"))),
      };
      if (reference !== "direct") {
        ratio.cpu = spread(byRound.map(({ a, b }) => cpu(a) / cpu(b)));
        const total = (id: TopologyId) => Object.values(summaries.find((s) => s.id === id)!.levels.find((l) => l.load === load)?.rssPeakMb ?? {}).reduce((x, y) => x + y, 0);
        ratio.rss = total(subject) / total(reference);
      }
      out.push(ratio);
    }
  }
  return out;
}
