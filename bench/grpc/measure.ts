/**
 * One measured cell: h2load against one topology at one shape, with the CPU time of every
 * process involved read at the edges of h2load's measured window (so it covers the very
 * requests h2load counts), the proxies' peak memory sampled throughout, and the calls the
 * proxies answered with a gRPC error themselves (h2load counts those as successes).
 */
import { cpuSeconds, machineCpuSeconds } from "../proc-stats.ts";
import { memoryPeaks, proxyCpuSeconds } from "../topology.ts";
import { shapeName, type H2loadResult, type Shape } from "./h2load.ts";
import { runH2load, type H2loadOutcome } from "./load.ts";
import type { GrpcTopology, TopologyId } from "./topology.ts";

const RSS_SAMPLE_MS = 100;

export interface Cell {
  id: TopologyId;
  shape: string;
  round: number;
  load: H2loadResult;
  /** The measured window, seconds, as the runner saw it (h2load's duration, give or take a poll). */
  windowS: number;
  /** CPU seconds of all the topology's proxy processes in the window. */
  proxyCpuS: number;
  /** Proxy CPU milliseconds per 1000 requests h2load completed in the window. */
  cpuMsPer1k: number;
  /** Share of one core each process used in the window: service and each proxy by label; h2load over its whole run (load.ts). */
  coreShare: Record<string, number>;
  /**
   * The share of the whole machine's CPU time left idle in the window. Idle time under
   * this closed-loop load means the stages waited on each other, not that they ran out of CPU.
   */
  machineIdle: number;
  /** Peak VmRSS and its private (RssAnon) part per proxy, MB, over warm-up and window. */
  rssPeakMb: Record<string, number>;
  privatePeakMb: Record<string, number>;
  /** Calls the proxies answered with a gRPC error status during the whole run. */
  proxyErrors: number;
  /** Calls the service refused as malformed (HTTP 400, also in h2load's failed count). */
  serviceRefused: number;
  /**
   * Successes h2load counted beyond all the calls the service answered during the run
   * (warm-up included, so this is a floor): answers that did not come from the service.
   */
  notFromService: number;
  /** Requests that did not succeed, by every count above. */
  errors: number;
}

type Reading = { at: number; cpu: Record<string, number>; machine: { busy: number; idle: number } };

export async function measure(h2load: string, t: GrpcTopology, shape: Shape, timing: { durationS: number; warmupS: number }, bodyFile: string, round: number): Promise<Cell> {
  const { rssPeakMb, privatePeakMb, sample } = memoryPeaks(t.proxies);
  const read = (): Reading => {
    const cpu: Record<string, number> = { service: cpuSeconds(t.service.child.pid) };
    for (const p of t.proxies) cpu[p.label] = proxyCpuSeconds(p);
    return { at: performance.now(), cpu, machine: machineCpuSeconds() };
  };
  let start: Reading | undefined;
  let end: Reading | undefined;

  const errorsBefore = t.proxyErrors ? await t.proxyErrors() : 0;
  const serviceBefore = await t.service.stats();
  const sampler = setInterval(sample, RSS_SAMPLE_MS);
  let run: H2loadOutcome;
  try {
    run = await runH2load(h2load, { port: t.port, shape, ...timing, bodyFile }, {
      start: () => (start = read()),
      end: () => (end = read()),
    });
  } finally {
    clearInterval(sampler);
  }
  sample();
  if (!start || !end) throw new Error("h2load's measured window was not seen");
  const proxyErrors = (t.proxyErrors ? await t.proxyErrors() : 0) - errorsBefore;
  const serviceAfter = await t.service.stats();
  const serviceRefused = serviceAfter.refused - serviceBefore.refused;

  const load = run.result;
  const notFromService = Math.max(0, load.succeeded - (serviceAfter.answered - serviceBefore.answered));
  const windowS = (end.at - start.at) / 1000;
  const coreShare: Record<string, number> = { h2load: run.coreShare };
  for (const name of Object.keys(end.cpu)) coreShare[name] = (end.cpu[name]! - start.cpu[name]!) / windowS;
  const proxyCpuS = t.proxies.reduce((sum, p) => sum + end!.cpu[p.label]! - start!.cpu[p.label]!, 0);
  const done = load.succeeded + load.failed;
  const busyS = end.machine.busy - start.machine.busy;
  const idleS = end.machine.idle - start.machine.idle;
  return {
    id: t.id,
    shape: shapeName(shape),
    round,
    load,
    windowS,
    proxyCpuS,
    cpuMsPer1k: t.proxies.length && done ? (proxyCpuS * 1000 * 1000) / done : NaN,
    coreShare,
    machineIdle: idleS / (busyS + idleS),
    rssPeakMb,
    privatePeakMb,
    proxyErrors,
    serviceRefused,
    notFromService,
    errors: load.failed + load.errored + load.timeout + proxyErrors + notFromService,
  };
}
