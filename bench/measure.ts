/**
 * One measured cell: a bounded load against one topology at one concurrency, with the
 * proxies' CPU time (before/after), their peak RSS (sampled during the load) and, for
 * pairs, how many new connections the inbound side accepted meanwhile.
 */
import { runLoad, type Loader } from "./driver.ts";
import type { LoadResult } from "./load-result.ts";
import { proxyCpuSeconds, proxyRssMb, type Topology } from "./topology.ts";

const RSS_SAMPLE_MS = 100;

export interface Cell {
  id: string;
  connections: number;
  round: number;
  load: LoadResult;
  /** CPU seconds of all the topology's proxy processes during the cell. */
  cpuS: number;
  /** Peak RSS per proxy (label → MB) during the cell. */
  rssPeakMb: Record<string, number>;
  /** New inbound (TLS) connections accepted during the cell; pairs only. */
  inboundNewConnections?: number;
}

export async function measure(t: Topology, loader: Loader, connections: number, durationS: number, round: number): Promise<Cell> {
  const connBefore = t.inboundConnections ? await t.inboundConnections() : undefined;
  const cpuBefore = t.proxies.map(proxyCpuSeconds);
  const rssPeakMb: Record<string, number> = {};
  const sample = () => {
    for (const p of t.proxies) rssPeakMb[p.label] = Math.max(rssPeakMb[p.label] ?? 0, proxyRssMb(p));
  };
  const sampler = setInterval(sample, RSS_SAMPLE_MS);
  let load: LoadResult;
  try {
    load = await runLoad(loader, t.url, connections, durationS);
  } finally {
    clearInterval(sampler);
  }
  sample();
  const cpuS = t.proxies.reduce((total, p, i) => total + proxyCpuSeconds(p) - cpuBefore[i]!, 0);
  const cell: Cell = { id: t.id, connections, round, load, cpuS, rssPeakMb };
  if (t.inboundConnections && connBefore !== undefined)
    cell.inboundNewConnections = (await t.inboundConnections()) - connBefore - (t.connectionsPerReading ?? 0);
  return cell;
}
