/**
 * From cells to one summary per topology and concurrency: medians across rounds for
 * throughput and latency (the machine is noisy), totals for CPU per request and new
 * connections, the highest peak for memory.
 */
import { TOPOLOGY_IDS } from "./args.ts";
import type { Cell } from "./measure.ts";
import { median, sum } from "./stats.ts";
import { title, type Family, type Setup, type Shape } from "./topology.ts";

export interface Level {
  connections: number;
  rounds: number;
  reqPerSec: number;
  p50Ms: number;
  p99Ms: number;
  requests: number;
  errors: number;
  non2xx: number;
  /** CPU milliseconds of the proxy processes per 1000 requests. */
  cpuMsPer1k: number;
  /** Busy CPU milliseconds of the whole machine per 1000 requests. */
  machineMsPer1k: number;
  /** Share of the machine's CPU time left idle during the cells, percent. */
  idlePct: number;
  inboundNewConnections?: number;
}

export interface Summary {
  id: string;
  title: string;
  family: Family;
  shape: Shape;
  status: "ok" | "skipped" | "failed";
  reason?: string;
  levels: Level[];
  /** RSS of each proxy after start-up and two requests, before any load, MB. */
  rssIdleMb: Record<string, number>;
  /** Peak RSS of each proxy (outbound, inbound, or the single proxy) across all cells, MB. */
  rssPeakMb: Record<string, number>;
  /** Peak private memory (RssAnon) of each proxy across all cells, MB: what one more proxy of the same binary adds. */
  privatePeakMb: Record<string, number>;
  cpuMsPer1k: number;
  requests: number;
  inboundNewConnections?: number;
}

const cpuMsPer1k = (cells: Cell[]) => {
  const requests = sum(cells.map((c) => c.load.requests));
  return requests ? (sum(cells.map((c) => c.cpuS)) * 1000) / (requests / 1000) : NaN;
};

const totalConnections = (cells: Cell[]) =>
  cells.some((c) => c.inboundNewConnections !== undefined) ? sum(cells.map((c) => c.inboundNewConnections ?? 0)) : undefined;

function level(cells: Cell[], connections: number, proxied: boolean): Level {
  const loads = cells.map((c) => c.load);
  return {
    connections,
    rounds: cells.length,
    reqPerSec: median(loads.map((l) => l.reqPerSec)),
    p50Ms: median(loads.map((l) => l.p50Ms)),
    p99Ms: median(loads.map((l) => l.p99Ms)),
    requests: sum(loads.map((l) => l.requests)),
    errors: sum(loads.map((l) => l.errors)),
    non2xx: sum(loads.map((l) => l.non2xx)),
    cpuMsPer1k: proxied ? cpuMsPer1k(cells) : NaN,
    machineMsPer1k: (sum(cells.map((c) => c.machine.busyS)) * 1000) / (sum(loads.map((l) => l.requests)) / 1000),
    idlePct: (100 * sum(cells.map((c) => c.machine.idleS))) / sum(cells.map((c) => c.machine.idleS + c.machine.busyS)),
    inboundNewConnections: totalConnections(cells),
  };
}

/** The highest of each label's readings. */
function peaks(readings: Record<string, number>[]): Record<string, number> {
  const peak: Record<string, number> = {};
  for (const r of readings) for (const [label, mb] of Object.entries(r)) peak[label] = Math.max(peak[label] ?? 0, mb);
  return peak;
}

export function summarize(
  setups: Setup[],
  cells: Cell[],
  failures: Map<string, string>,
  connections: number[],
  idle: Map<string, Record<string, number>>,
): Summary[] {
  const byId = new Map(setups.map((s) => [s.ok ? s.topology.id : s.id, s]));
  return TOPOLOGY_IDS.filter((id) => byId.has(id)).map((id) => {
    const setup = byId.get(id)!;
    const family = setup.ok ? setup.topology.family : setup.family;
    const shape = setup.ok ? setup.topology.shape : setup.shape;
    const mine = cells.filter((c) => c.id === id);
    const failure = setup.ok ? failures.get(id) : setup.reason;
    return {
      id,
      title: title(family, shape),
      family,
      shape,
      status: setup.ok ? (failure ? "failed" : "ok") : setup.status,
      ...(failure ? { reason: failure } : {}),
      levels: connections.map((n) => mine.filter((c) => c.connections === n)).filter((cs) => cs.length).map((cs) => level(cs, cs[0]!.connections, shape !== "direct")),
      rssIdleMb: idle.get(id) ?? {},
      rssPeakMb: peaks(mine.map((c) => c.rssPeakMb)),
      privatePeakMb: peaks(mine.map((c) => c.privatePeakMb)),
      cpuMsPer1k: shape === "direct" ? NaN : cpuMsPer1k(mine),
      requests: sum(mine.map((c) => c.load.requests)),
      inboundNewConnections: totalConnections(mine),
    };
  });
}

const largest = (perProxy: Record<string, number>) => (Object.keys(perProxy).length ? Math.max(...Object.values(perProxy)) : NaN);

/** The largest per-proxy peak: what "each proxy < N MB" is checked against. */
export const maxRssMb = (s: Summary) => largest(s.rssPeakMb);
export const maxPrivateMb = (s: Summary) => largest(s.privatePeakMb);
