/**
 * Runs one bounded h2load and calls back at the edges of its measured window (the end of
 * its warm-up, the end of its duration), read from its output as it prints them: the
 * proxies' CPU is read there, so it covers exactly the requests h2load counts.
 */
import { runToEnd, spawn, tail, type Child } from "../procs.ts";
import { h2loadArgs, MEASURE_END, MEASURE_START, parseH2load, type H2loadResult, type H2loadRun } from "./h2load.ts";

/** How often the output is checked for the window's edges: 5 ms in a 5 s window is 0.1%. */
const POLL_MS = 5;
/** A hung h2load is killed this long after its warm-up and duration. */
const OVERSTAY_S = 20;

export interface Window {
  /** The measured window began (warm-up over). */
  start(child: Child): void;
  /** The measured window ended (h2load stops its clients next). */
  end(child: Child): void;
}

/** The lines a load generator prints at its measured window's edges: h2load's by default. */
export interface Markers {
  start: string;
  end: string;
}

const H2LOAD_MARKERS: Markers = { start: MEASURE_START, end: MEASURE_END };

/** Calls `window` back as the child prints its window's edges (also used by bench/tcp/). */
export async function watchWindow(child: Child, window: Window, markers: Markers = H2LOAD_MARKERS): Promise<void> {
  let started = false;
  while (child.proc.exitCode === null && child.proc.signalCode === null) {
    const out = child.stdout();
    if (!started && out.includes(markers.start)) {
      started = true;
      window.start(child);
    }
    if (started && out.includes(markers.end)) return window.end(child);
    await Bun.sleep(POLL_MS);
  }
  // It exited between two polls: the window still gets its end, if a little late.
  if (started) window.end(child);
}

export interface H2loadOutcome {
  result: H2loadResult;
  /**
   * h2load's own share of a core over its whole run (warm-up included), from wait4's
   * rusage: read in /proc at the window's end it may already have exited, and a process
   * that has exited reads as no CPU at all.
   */
  coreShare: number;
}

export async function runH2load(h2load: string, run: H2loadRun, window: Window): Promise<H2loadOutcome> {
  const began = performance.now();
  const child = spawn(`h2load ${run.shape.connections}x${run.shape.streams}`, h2loadArgs(h2load, run));
  const watching = watchWindow(child, window);
  const code = await runToEnd(child, (run.warmupS + run.durationS + OVERSTAY_S) * 1000);
  const wallS = (performance.now() - began) / 1000;
  await Promise.all([watching, child.drained]);
  const out = child.stdout();
  if (code !== 0) throw new Error(`h2load exited ${code}: ${tail(child.stderr() || out)}`);
  if (!out.includes(MEASURE_END)) throw new Error(`h2load never reached the end of its duration:\n${tail(out)}`);
  const cpuUs = child.proc.resourceUsage()?.cpuTime.total;
  return { result: parseH2load(out), coreShare: cpuUs === undefined ? NaN : Number(cpuUs) / 1e6 / wallS };
}
