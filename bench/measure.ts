/**
 * One measured cell: a bounded load against one topology at one concurrency, with the
 * proxies' CPU time (before/after), the whole machine's busy and idle time, their peak
 * RSS and private memory (sampled during the load) and, for pairs, how many new connections the inbound
 * side accepted meanwhile.
 */
import { runLoad, type Loader } from "./driver.ts";
import type { LoadResult } from "./load-result.ts";
import { machineCpuSeconds } from "./proc-stats.ts";
import { memoryPeaks, proxyCpuSeconds, type Topology } from "./topology.ts";

const RSS_SAMPLE_MS = 100;

export interface Cell {
  id: string;
  connections: number;
  round: number;
  load: LoadResult;
  /** CPU seconds of all the topology's proxy processes during the cell. */
  cpuS: number;
  /**
   * The whole machine during the cell: busy CPU seconds (load generator, service and
   * proxies alike) and idle ones. Idle time under a closed-loop load means every stage
   * was waiting on another: the topology is latency-bound, not CPU-bound.
   */
  machine: { busyS: number; idleS: number };
  /** Peak RSS per proxy (label → MB) during the cell. */
  rssPeakMb: Record<string, number>;
  /** Peak private memory (RssAnon) per proxy (label → MB) during the cell. */
  privatePeakMb: Record<string, number>;
  /** New inbound (TLS) connections accepted during the cell; pairs only. */
  inboundNewConnections?: number;
}

export async function measure(t: Topology, loader: Loader, connections: number, durationS: number, round: number): Promise<Cell> {
  const connBefore = t.inboundConnections ? await t.inboundConnections() : undefined;
  const cpuBefore = t.proxies.map(proxyCpuSeconds);
  const machineBefore = machineCpuSeconds();
  const { rssPeakMb, privatePeakMb, sample } = memoryPeaks(t.proxies);
  const sampler = setInterval(sample, RSS_SAMPLE_MS);
  let load: LoadResult;
  try {
    load = await runLoad(loader, t.url, connections, durationS);
  } finally {
    clearInterval(sampler);
  }
  sample();
  const cpuS = t.proxies.reduce((total, p, i) => total + proxyCpuSeconds(p) - cpuBefore[i]!, 0);
  const machineAfter = machineCpuSeconds();
  const machine = { busyS: machineAfter.busy - machineBefore.busy, idleS: machineAfter.idle - machineBefore.idle };
  const cell: Cell = { id: t.id, connections, round, load, cpuS, machine, rssPeakMb, privatePeakMb };
  if (t.inboundConnections && connBefore !== undefined)
    cell.inboundNewConnections = (await t.inboundConnections()) - connBefore - (t.connectionsPerReading ?? 0);
  return cell;
}
