/**
 * One measured cell: the load client against one topology with one load, the CPU time of
 * every process involved read at the edges of the client's measured window (so it covers
 * the very round trips or bytes the client counted), the proxies' memory sampled
 * throughout, and for mesh what the sidecars counted themselves.
 */
import { cpuSeconds, machineCpuSeconds } from "../proc-stats.ts";
import { memoryPeaks, proxyCpuSeconds } from "../topology.ts";
import { loadName, runClient, type Load } from "./load.ts";
import type { TcpTopology, TopologyId } from "./topology.ts";
import type { ClientResult } from "./wire.ts";

const RSS_SAMPLE_MS = 100;
const MIB = 2 ** 20;

export interface Cell {
  id: TopologyId;
  /** The load's name (load.ts): "rr c1", "bulk 64 MiB". */
  load: string;
  round: number;
  client: ClientResult;
  /** The measured window, seconds, as the runner saw it (the client's, give or take a poll). */
  windowS: number;
  /** CPU seconds of all the topology's proxy processes in the window. */
  proxyCpuS: number;
  /** Round trips: proxy CPU milliseconds per 1000 round trips the client completed in the window. */
  cpuMsPer1k: number;
  /** Bulk: proxy CPU milliseconds per MiB carried one way (each MiB also comes back). */
  cpuMsPerMiB: number;
  /** Share of one core each process used in the window: client (its own count), echo and each proxy by label. */
  coreShare: Record<string, number>;
  /** The share of the whole machine's CPU left idle in the window. */
  machineIdle: number;
  /** Peak VmRSS and its private (RssAnon) part per proxy, MB, over the whole cell. */
  rssPeakMb: Record<string, number>;
  privatePeakMb: Record<string, number>;
  /** Connections the proxies ended other than in order (mesh's own count), or still held open after the client was done. */
  proxyFailed: number;
  /** Connections the client opened that a proxy side did not count as carried in order, or beyond them. */
  notCarried: number;
  /** Failed connections or transfers, by every count above. */
  errors: number;
}

type Reading = { at: number; cpu: Record<string, number>; machine: { busy: number; idle: number } };

export async function measure(t: TcpTopology, load: Load, timing: { durationS: number; warmupS: number }, round: number): Promise<Cell> {
  const { rssPeakMb, privatePeakMb, sample } = memoryPeaks(t.proxies);
  const read = (): Reading => {
    const cpu: Record<string, number> = { echo: cpuSeconds(t.echo.child.pid) };
    for (const p of t.proxies) cpu[p.label] = proxyCpuSeconds(p);
    return { at: performance.now(), cpu, machine: machineCpuSeconds() };
  };
  let start: Reading | undefined;
  let end: Reading | undefined;

  const before = await t.proxyCounts?.();
  const sampler = setInterval(sample, RSS_SAMPLE_MS);
  let client: ClientResult;
  try {
    client = await runClient(t.port, load, timing, { start: () => (start = read()), end: () => (end = read()) });
  } finally {
    clearInterval(sampler);
  }
  sample();
  if (!start || !end) throw new Error("the load client's measured window was not seen");
  const after = await t.proxyCounts?.();
  const proxyFailed = before && after ? after.failed - before.failed : 0;
  const notCarried = before && after ? Math.abs(client.opened - client.errors - (after.ok - before.ok)) : 0;

  const windowS = (end.at - start.at) / 1000;
  // The client's share from its own count: it may exit before the runner reads its /proc at the window's end.
  const coreShare: Record<string, number> = { client: client.cpuMs / 1000 / windowS };
  for (const name of Object.keys(end.cpu)) coreShare[name] = (end.cpu[name]! - start.cpu[name]!) / windowS;
  const proxyCpuS = t.proxies.reduce((sum, p) => sum + end!.cpu[p.label]! - start!.cpu[p.label]!, 0);
  const busyS = end.machine.busy - start.machine.busy;
  const idleS = end.machine.idle - start.machine.idle;
  const hasProxies = t.proxies.length > 0;
  return {
    id: t.id,
    load: loadName(load),
    round,
    client,
    windowS,
    proxyCpuS,
    cpuMsPer1k: hasProxies && client.kind === "rr" && client.roundTrips > 0 ? (proxyCpuS * 1e6) / client.roundTrips : NaN,
    cpuMsPerMiB: hasProxies && client.kind === "bulk" && client.bytes > 0 ? (proxyCpuS * 1000) / (client.bytes / MIB) : NaN,
    coreShare,
    machineIdle: idleS / (busyS + idleS),
    rssPeakMb,
    privatePeakMb,
    proxyFailed,
    notCarried,
    errors: client.errors + proxyFailed + notCarried,
  };
}
