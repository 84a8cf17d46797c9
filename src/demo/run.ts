/**
 * `mesh demo`, start to end: everything in one temporary directory, the mesh brought up
 * (stack.ts), steady traffic, a live summary, and on the duration's end, Ctrl-C, SIGTERM
 * or SIGHUP every process it started stopped by pid and the directory removed. A second
 * Ctrl-C kills whatever is left at once.
 */
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { MeshError } from "../core/errors.ts";
import { Children } from "./children.ts";
import { bypassProxyForLoopback, childEnv } from "./env.ts";
import { InPlace, liveLines, lookNextLines, pct, trafficText } from "./render.ts";
import { meshCommandText } from "./self.ts";
import { Servers, startStack, type Stack } from "./stack.ts";
import { MeshStats } from "./stats.ts";
import { TrafficGenerator } from "./traffic.ts";

export interface DemoOptions {
  durationMs: number;
  rate: number;
  json: boolean;
  python: string;
  out: (line: string) => void;
  /** Set on a terminal: the live summary is redrawn in place through it. */
  tty?: { write: (text: string) => void; columns: () => number };
}

const SIGNALS = ["SIGINT", "SIGTERM", "SIGHUP"] as const;
const STOP_GRACE_MS = 4000;

/** Resolves with why the demo should stop: a signal, the duration, or a child that died. */
class StopReason {
  reason?: string;
  failure?: string;
  private resolve!: () => void;
  readonly promise = new Promise<void>((r) => (this.resolve = r));
  stop(reason: string, failure?: string): void {
    if (this.reason) return;
    this.reason = reason;
    this.failure = failure;
    this.resolve();
  }
}

export async function runDemo(o: DemoOptions): Promise<number> {
  bypassProxyForLoopback();
  const emit = (event: Record<string, unknown>) => o.out(JSON.stringify(event));
  const dir = mkdtempSync(join(tmpdir(), "mesh-demo-"));
  const stop = new StopReason();
  const children = new Children(childEnv(), dir, (name, pid) => o.json && emit({ event: "started", name, pid }));
  const servers = new Servers();
  const onSignal = (signal: string) => {
    if (!stop.reason) return stop.stop(signal);
    children.killAll();
    rmSync(dir, { recursive: true, force: true });
    process.exit(130);
  };
  for (const s of SIGNALS) process.on(s, onSignal);
  const progress = (step: string, detail: Record<string, unknown>, warning = false) =>
    o.json ? emit({ event: "progress", step, ...(warning ? { warning } : {}), ...detail }) : o.out(`  ${warning ? "!" : "✓"} ${step}`);

  let traffic: TrafficGenerator | undefined;
  let error: unknown;
  try {
    if (o.json) emit({ event: "starting", tempDir: dir, pid: process.pid });
    else o.out(`Starting a demo mesh in ${dir} (Ctrl-C stops it)`);
    const setup = startStack({ dir, children, servers, python: o.python, progress });
    setup.catch(() => {}); // if a signal wins the race below, its failure is moot
    const stack = await Promise.race([setup, stop.promise.then(() => undefined)]);
    if (stack) {
      children.watch((name, how) => stop.stop("failure", `${name} exited unexpectedly (${how})`));
      const stats = new MeshStats(stack.watched);
      await stats.scrape();
      const loadgen = stack.sidecars.find((s) => s.instance === "loadgen")!;
      traffic = new TrafficGenerator(loadgen.ports.outbound, "frontend", o.rate);
      traffic.start();
      announce(o, stack, dir, children.pids(), emit);
      const timer = setTimeout(() => stop.stop("duration"), o.durationMs);
      await watch(o, stack, stats, traffic, stop, emit);
      clearTimeout(timer);
      await traffic.stop();
      await stats.scrape();
      report(o, stack, stats, traffic, emit, true);
    }
  } catch (err) {
    error = err;
    stop.stop("failure", (err as Error).message);
  }
  // Signals stay handled until everything is stopped: another one kills what is left at once.
  const done = await cleanup();
  for (const s of SIGNALS) process.off(s, onSignal);
  finish(o, stop, done);
  if (error) throw error;
  if (stop.failure) throw new MeshError(stop.failure);
  return 0;

  async function cleanup(): Promise<{ processes: number; removed: boolean; dir: string }> {
    await traffic?.stop();
    const processes = Object.keys(children.pids()).length;
    // Sidecars and services first, so the control plane sees them deregister; then it.
    await children.stop(STOP_GRACE_MS, (name) => name !== "control plane");
    await servers.close();
    await children.stop(STOP_GRACE_MS);
    rmSync(dir, { recursive: true, force: true });
    return { processes, removed: !existsSync(dir), dir };
  }
}

/** Says what was stopped and removed, and why. */
function finish(o: DemoOptions, stop: StopReason, done: { processes: number; removed: boolean; dir: string }): void {
  if (o.json) o.out(JSON.stringify({ event: "stopped", reason: stop.reason, failure: stop.failure, ...done }));
  else o.out(`Stopped ${plural(done.processes, "process", "processes")} (${stop.reason}) and ${done.removed ? "removed" : "could not remove"} ${done.dir}.`);
}

function announce(o: DemoOptions, stack: Stack, dir: string, pids: Record<string, number>, emit: (e: Record<string, unknown>) => void): void {
  const next = {
    mesh: meshCommandText(),
    adminUrl: stack.cp.adminUrl,
    adminTokenFile: stack.cp.adminTokenFile,
    tempDir: dir,
    sidecars: stack.sidecars.map((s) => ({ instance: s.instance, adminPort: s.ports.admin })),
  };
  if (o.json) {
    emit({ event: "ready", tempDir: dir, adminUrl: next.adminUrl, adminTokenFile: next.adminTokenFile, pids, catalog: stack.catalog, sidecars: stack.sidecars });
    return;
  }
  o.out(`  → traffic: ${o.rate} req/s from loadgen to frontend, which calls catalog and pricing`);
  o.out("");
  for (const line of lookNextLines(next)) o.out(line);
}

/** Scrapes every second and shows the summary until told to stop. */
async function watch(o: DemoOptions, stack: Stack, stats: MeshStats, traffic: TrafficGenerator, stop: StopReason, emit: (e: Record<string, unknown>) => void): Promise<void> {
  const started = performance.now();
  const every = o.tty ? 1 : o.json ? 2 : 5;
  const view = o.tty ? new InPlace(o.tty.write, o.tty.columns) : undefined;
  for (let tick = 1; !stop.reason; tick++) {
    await Promise.race([Bun.sleep(1000), stop.promise]);
    if (stop.reason) break;
    await stats.scrape();
    if (tick % every) continue;
    const elapsedMs = performance.now() - started;
    if (o.json) report(o, stack, stats, traffic, emit, false);
    else {
      const lines = liveLines({ elapsedMs, remainingMs: Math.max(0, o.durationMs - elapsedMs), offeredRps: o.rate, instances: stats.instances(), routes: stats.routes(), traffic: traffic.stats });
      if (view) view.draw(lines);
      else for (const line of [...lines, ""]) o.out(line);
    }
  }
}

/** A JSON summary event, or the closing lines on a terminal. */
function report(o: DemoOptions, stack: Stack, stats: MeshStats, traffic: TrafficGenerator, emit: (e: Record<string, unknown>) => void, final: boolean): void {
  if (o.json) {
    emit({ event: "summary", final, traffic: traffic.stats, instances: stats.instances(), routes: stats.routes(), seenCallers: stack.seen.toJSON() });
    return;
  }
  const t = traffic.stats;
  const pricing = stats.routes().find((r) => r.service === "pricing");
  o.out("");
  o.out(`loadgen → frontend: ${trafficText(t)}.`);
  if (pricing) {
    const flaky = stats.instances().find((r) => r.note === "flaky");
    const overall = (r: { requests: number; failed: number }) => (r.requests ? (r.requests - r.failed) / r.requests : undefined);
    o.out(`pricing: ${plural(pricing.retries, "retry", "retries")} and ${plural(pricing.ejections, "ejection", "ejections")} kept frontend's calls at ${pct(overall(pricing))} success` + (flaky ? `, while ${flaky.instance} itself answered ${pct(overall(flaky))} without a 5xx.` : "."));
  }
}

function plural(n: number, one: string, many: string): string {
  return `${n} ${n === 1 ? one : many}`;
}
