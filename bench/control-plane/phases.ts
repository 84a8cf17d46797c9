/**
 * The measured phases: every proxy registers and subscribes (memory per subscribed
 * proxy), then rounds of one policy change each (time from apply to every ack).
 */
import { percentile } from "../stats.ts";
import type { Options } from "./args.ts";
import { collectTimes, confirmOnControlPlane, describe, errorCount, fleetStatus, waitAllAcked, type FleetStatus } from "./fleet.ts";
import { policyManifest } from "./manifests.ts";
import { cpuSeconds, openFds, peakSampler, settledRssMb } from "./resources.ts";
import type { Setup } from "./setup.ts";

export interface Spread {
  p50: number;
  p99: number;
  max: number;
}

export interface SubscribeResult {
  registerMs: number;
  /** From starting every long poll to every proxy acking its first version. */
  syncMs: number;
  /** One GET /v1/proxies listing every proxy. */
  listMs: number;
  rssBeforeMb: number;
  rssAfterMb: number;
  perProxyKb: number;
  fdsBefore: number;
  fdsAfter: number;
  /** CPU the control plane and the simulators used from the first register to the last first ack. */
  cpCpuMs: number;
  simCpuMs: number;
}

export interface RoundResult {
  round: number;
  version: string;
  applyMs: number;
  received: Spread;
  acked: Spread;
  cpCpuMs: number;
  simCpuMs: number;
  peakRssMb: number;
  listMs: number;
  errors: number;
}

const spread = (values: number[]): Spread => {
  const s = [...values].sort((a, b) => a - b);
  return { p50: percentile(s, 50), p99: percentile(s, 99), max: s.at(-1) ?? NaN };
};

/** Generous, but bounded: grows with N because a snapshot grows with N. */
const ackTimeoutMs = (n: number) => 60_000 + 60 * n;

/** CPU ms of the control plane and of all simulators since the call. */
function cpuMeter({ cp, sims }: Setup): () => { cp: number; sims: number } {
  const simCpu = () => sims.reduce((a, s) => a + cpuSeconds(s.child.pid), 0);
  const cp0 = cpuSeconds(cp.child.pid);
  const sims0 = simCpu();
  return () => ({ cp: (cpuSeconds(cp.child.pid) - cp0) * 1000, sims: (simCpu() - sims0) * 1000 });
}

/** Every 5 s while waiting: where the fleet is and how busy the control plane has been. */
function progress(setup: Setup, started: number, log: (line: string) => void): (s: FleetStatus) => void {
  const cpu = cpuMeter(setup);
  return (s) => {
    const c = cpu();
    log(`    +${Math.round((Date.now() - started) / 1000)} s: ${describe(s)}; CPU ms control plane ${Math.round(c.cp)}, simulators ${Math.round(c.sims)}`);
  };
}

export async function subscribeAll(setup: Setup, n: number, log: (line: string) => void): Promise<SubscribeResult> {
  const { cp, sims } = setup;
  const pid = cp.child.pid;
  const rssBeforeMb = await settledRssMb(pid);
  const fdsBefore = openFds(pid);
  const cpu = cpuMeter(setup);

  const t = performance.now();
  const cpuLog = cpuMeter(setup);
  const ticker = setInterval(() => {
    const c = cpuLog();
    log(`    +${Math.round((performance.now() - t) / 1000)} s registering: CPU ms control plane ${Math.round(c.cp)}, simulators ${Math.round(c.sims)}`);
  }, 5000);
  const registered = (await Promise.all(sims.map((s) => s.register())).finally(() => clearInterval(ticker))).reduce((a, s) => a + s.registered, 0);
  const registerMs = performance.now() - t;
  if (registered !== n) throw new Error(`only ${registered} of ${n} proxies registered: ${describe(await fleetStatus(sims, 0))}`);
  const listed = (await cp.proxies()).length;
  if (listed !== n) throw new Error(`GET /v1/proxies lists ${listed} proxies after ${n} registered`);
  log(`registered ${n} proxies in ${Math.round(registerMs)} ms; GET /v1/proxies lists ${listed}; subscribing`);

  const t0 = Date.now();
  await Promise.all(sims.map((s) => s.subscribe()));
  const version = await waitAllAcked(sims, t0, ackTimeoutMs(n), progress(setup, t0, log));
  const syncMs = Date.now() - t0;
  const used = cpu();
  const listMs = await confirmOnControlPlane(cp, n, version, 60_000);
  log(`all ${n} subscribed and acked ${version} in ${syncMs} ms; GET /v1/proxies took ${Math.round(listMs)} ms`);

  const rssAfterMb = await settledRssMb(pid, 2000);
  return {
    registerMs, syncMs, listMs, rssBeforeMb, rssAfterMb, perProxyKb: ((rssAfterMb - rssBeforeMb) * 1024) / n,
    fdsBefore, fdsAfter: openFds(pid), cpCpuMs: used.cp, simCpuMs: used.sims,
  };
}

export async function policyRound(setup: Setup, opts: Options, round: number, previous: string, log: (line: string) => void): Promise<RoundResult> {
  const { cp, sims } = setup;
  await Bun.sleep(1000); // let the previous round's acks and heartbeats settle
  const errorsBefore = errorCount((await fleetStatus(sims, 0)).errors);
  const cpu = cpuMeter(setup);
  const peak = peakSampler(cp.child.pid);
  const t0 = Date.now();
  let version: string;
  let applyMs: number;
  try {
    await cp.apply([policyManifest(round)]);
    applyMs = Date.now() - t0;
    version = await waitAllAcked(sims, t0, ackTimeoutMs(opts.proxies), progress(setup, t0, log));
  } finally {
    peak.stop();
  }
  const used = cpu();
  const peakRssMb = peak.stop();
  if (version === previous) throw new Error(`round ${round}: the policy change did not change the proxies' version (${version})`);
  const listMs = await confirmOnControlPlane(cp, opts.proxies, version, 60_000);
  const times = await collectTimes(sims, version);
  if (times.missing) throw new Error(`round ${round}: ${times.missing} proxies have no record of ${version}`);
  const errors = errorCount((await fleetStatus(sims, 0)).errors) - errorsBefore;
  return {
    round, version, applyMs,
    received: spread(times.items.map((x) => x.receivedAt - t0)),
    acked: spread(times.items.map((x) => x.ackedAt - t0)),
    cpCpuMs: used.cp, simCpuMs: used.sims, peakRssMb, listMs, errors,
  };
}
