/**
 * Cells into per-topology, per-shape medians, and the ratios the report leads with. A
 * ratio is taken within each round (the two topologies measured minutes apart at most, in
 * rotated order) and the median of those is reported with its spread: on a shared,
 * noisy machine that is steadier than a ratio of two medians.
 */
import { median } from "../stats.ts";
import type { Cell } from "./measure.ts";
import { TITLES, type GrpcSetup, type TopologyId } from "./topology.ts";

export interface Level {
  shape: string;
  cells: number;
  reqPerSec: number;
  meanMs: number;
  /** The worst single request over every round. */
  maxMs: number;
  cpuMsPer1k: number;
  /** Median share of one core per process (h2load, service, each proxy). */
  coreShare: Record<string, number>;
  /** Median share of the machine's CPU left idle in the window. */
  machineIdle: number;
  /** Peak per proxy over every round, MB. */
  rssPeakMb: Record<string, number>;
  privatePeakMb: Record<string, number>;
  errors: number;
}

export interface Summary {
  id: TopologyId;
  title: string;
  status: "ok" | "skipped" | "failed";
  reason?: string;
  /** What the service saw on the readiness check (:authority, x-mesh-client-id). */
  seen?: string;
  levels: Level[];
}

/** The largest value per label over the cells (also used by bench/tcp/). */
export function peaks<C>(cells: C[], pick: (c: C) => Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const c of cells) for (const [label, mb] of Object.entries(pick(c))) out[label] = Math.max(out[label] ?? 0, mb);
  return out;
}

/** The median per label over the cells (also used by bench/tcp/). */
export function medians<C>(cells: C[], pick: (c: C) => Record<string, number>): Record<string, number> {
  const labels = new Set(cells.flatMap((c) => Object.keys(pick(c))));
  return Object.fromEntries([...labels].map((l) => [l, median(cells.map((c) => pick(c)[l] ?? NaN))]));
}

export function summarize(setups: GrpcSetup[], cells: Cell[], failures: Map<TopologyId, string>, shapes: string[], seen: Partial<Record<TopologyId, string>>): Summary[] {
  return setups.map((s) => {
    if (!s.ok) return { id: s.id, title: TITLES[s.id], status: s.status, reason: s.reason, levels: [] };
    const id = s.topology.id;
    const levels = shapes.flatMap((shape): Level[] => {
      const mine = cells.filter((c) => c.id === id && c.shape === shape);
      if (mine.length === 0) return [];
      return [
        {
          shape,
          cells: mine.length,
          reqPerSec: median(mine.map((c) => c.load.reqPerSec)),
          meanMs: median(mine.map((c) => c.load.meanMs)),
          maxMs: Math.max(...mine.map((c) => c.load.maxMs)),
          cpuMsPer1k: median(mine.map((c) => c.cpuMsPer1k)),
          coreShare: medians(mine, (c) => c.coreShare),
          machineIdle: median(mine.map((c) => c.machineIdle)),
          rssPeakMb: peaks(mine, (c) => c.rssPeakMb),
          privatePeakMb: peaks(mine, (c) => c.privatePeakMb),
          errors: mine.reduce((n, c) => n + c.errors, 0),
        },
      ];
    });
    const failed = failures.get(id);
    return { id, title: TITLES[id], status: failed ? "failed" : "ok", reason: failed, seen: seen[id], levels };
  });
}

/** One quantity's ratio: the median over rounds, and the lowest and highest round. */
export interface Spread {
  median: number;
  low: number;
  high: number;
  rounds: number;
}

export interface Ratio {
  subject: TopologyId;
  reference: TopologyId;
  shape: string;
  reqPerSec?: Spread;
  meanMs?: Spread;
  cpuPer1k?: Spread;
  /** The pair's peak RSS (both proxies together), over the whole run: not per round. */
  rss?: number;
}

/** The median of per-round values, with the lowest and highest round (also used by bench/tcp/). */
export function spread(values: number[]): Spread | undefined {
  const ok = values.filter(Number.isFinite);
  if (ok.length === 0) return undefined;
  return { median: median(ok), low: Math.min(...ok), high: Math.max(...ok), rounds: ok.length };
}

const PAIRS: [TopologyId, TopologyId][] = [
  ["mesh-pair", "nginx-pair"],
  ["mesh-pair", "direct"],
];

export function ratios(cells: Cell[], summaries: Summary[], shapes: string[]): Ratio[] {
  const out: Ratio[] = [];
  const ok = (id: TopologyId) => summaries.find((s) => s.id === id)?.status === "ok";
  for (const [subject, reference] of PAIRS) {
    if (!ok(subject) || !ok(reference)) continue;
    for (const shape of shapes) {
      const rounds = [...new Set(cells.filter((c) => c.shape === shape).map((c) => c.round))];
      const byRound = rounds.flatMap((round) => {
        const a = cells.find((c) => c.id === subject && c.shape === shape && c.round === round);
        const b = cells.find((c) => c.id === reference && c.shape === shape && c.round === round);
        return a && b ? [{ a, b }] : [];
      });
      if (byRound.length === 0) continue;
      const ratio: Ratio = {
        subject,
        reference,
        shape,
        reqPerSec: spread(byRound.map(({ a, b }) => a.load.reqPerSec / b.load.reqPerSec)),
        meanMs: spread(byRound.map(({ a, b }) => a.load.meanMs / b.load.meanMs)),
      };
      if (reference !== "direct") {
        ratio.cpuPer1k = spread(byRound.map(({ a, b }) => a.cpuMsPer1k / b.cpuMsPer1k));
        const total = (id: TopologyId) => Object.values(summaries.find((s) => s.id === id)!.levels.find((l) => l.shape === shape)?.rssPeakMb ?? {}).reduce((x, y) => x + y, 0);
        ratio.rss = total(subject) / total(reference);
      }
      out.push(ratio);
    }
  }
  return out;
}
