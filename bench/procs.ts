/**
 * Every process the bench starts, so each one is stopped by its pid: at the end, on an
 * error and on Ctrl-C. Output is drained continuously (a full pipe would stall a child)
 * and kept, capped, for error messages and ready lines.
 */
import type { Subprocess } from "bun";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { isAlive, readComm } from "./proc-stats.ts";

const KEEP_CHARS = 64 * 1024;

export interface Child {
  name: string;
  pid: number;
  proc: Subprocess<"ignore", "pipe", "pipe">;
  stdout(): string;
  stderr(): string;
  /** Resolves once both output streams have ended (after exit, all output is read). */
  drained: Promise<void>;
}

interface Tracked {
  pid: number;
  comm: string | undefined;
}

const children: Child[] = [];
/** Pids a child forked itself (nginx workers): stopped by pid if their parent left them behind. */
const descendants: Tracked[] = [];
/** Set once stopping has begun: from then on nothing new is started, so nothing escapes the stop. */
let closing = false;
export const isClosing = () => closing;

function collect(stream: ReadableStream<Uint8Array>): { text: () => string; done: Promise<void> } {
  let text = "";
  const decoder = new TextDecoder();
  const done = (async () => {
    for await (const chunk of stream) {
      text += decoder.decode(chunk, { stream: true });
      if (text.length > KEEP_CHARS * 2) text = text.slice(-KEEP_CHARS);
    }
  })().catch(() => undefined);
  return { text: () => text, done };
}

export function spawn(name: string, cmd: string[]): Child {
  if (closing) throw new Error(`stopping: ${name} not started`);
  const proc = Bun.spawn(cmd, { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  const out = collect(proc.stdout);
  const err = collect(proc.stderr);
  const child: Child = { name, pid: proc.pid, proc, stdout: out.text, stderr: err.text, drained: Promise.all([out.done, err.done]).then(() => undefined) };
  children.push(child);
  return child;
}

export function trackDescendant(pid: number): void {
  descendants.push({ pid, comm: readComm(pid) });
}

/** Waits until `stdout` holds a line matching `test`; fails early if the child exits. */
export async function waitForLine(child: Child, test: (line: string) => boolean, timeoutMs: number): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const line = child.stdout().split("\n").find(test);
    if (line !== undefined) return line;
    if (child.proc.exitCode !== null) throw new Error(`${child.name} exited ${child.proc.exitCode} before it was ready\n${tail(child.stderr())}`);
    await Bun.sleep(20);
  }
  throw new Error(`${child.name} was not ready within ${timeoutMs} ms\n${tail(child.stderr())}`);
}

export function tail(text: string, lines = 15): string {
  return text.trimEnd().split("\n").slice(-lines).join("\n");
}

/** Runs a child to completion with a time limit, killing it (by pid) if it overstays. */
export async function runToEnd(child: Child, timeoutMs: number): Promise<number> {
  const timer = setTimeout(() => child.proc.kill("SIGKILL"), timeoutMs);
  try {
    return await child.proc.exited;
  } finally {
    clearTimeout(timer);
  }
}

async function exitsWithin(child: Child, ms: number): Promise<boolean> {
  let timer: Timer | undefined;
  const timeout = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  try {
    return await Promise.race([child.proc.exited.then(() => true as const), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** SIGTERM (graceful drain for mesh, fast shutdown for nginx, haproxy), then SIGKILL after `graceMs`. */
export async function stopChild(child: Child, graceMs = 5000): Promise<void> {
  if (child.proc.exitCode !== null || child.proc.signalCode !== null) return;
  child.proc.kill("SIGTERM");
  if (!(await exitsWithin(child, graceMs))) {
    child.proc.kill("SIGKILL");
    await child.proc.exited;
  }
}

export async function stopAll(): Promise<void> {
  closing = true;
  await Promise.all(children.map((c) => stopChild(c)));
  for (const d of descendants) {
    // Same pid and same command name: not a recycled pid of someone else's process.
    if (isAlive(d.pid) && readComm(d.pid) === d.comm) {
      try {
        process.kill(d.pid, "SIGKILL");
      } catch {
        // exited between the check and the kill
      }
    }
  }
}

/** Every pid this run started, and whether it is still running: the proof that cleanup worked. */
export function survivors(): { started: number; alive: { name: string; pid: number }[] } {
  const all = [...children.map((c) => ({ name: c.name, pid: c.pid })), ...descendants.map((d) => ({ name: d.comm ?? "?", pid: d.pid }))];
  return { started: all.length, alive: all.filter((p) => isAlive(p.pid)) };
}

/** Stops every process, removes the scratch directory and says, by pid, whether all exited. */
export async function stopAndReport(tmp: string): Promise<string> {
  await stopAll();
  rmSync(tmp, { recursive: true, force: true });
  const { started, alive } = survivors();
  return alive.length
    ? `cleanup: ${alive.length} of ${started} started processes still running: ${alive.map((p) => `${p.name} (pid ${p.pid})`).join(", ")}`
    : `cleanup: all ${started} processes this run started have exited (checked by pid in /proc)`;
}

/** Ctrl-C or SIGTERM: run `cleanup`, print its report, exit 130 or 143. */
export function stopOnSignals(cleanup: () => Promise<string>, log: (line: string) => void): void {
  for (const signal of ["SIGINT", "SIGTERM"] as const)
    process.once(signal, () => {
      log(`\n${signal}: stopping every process this run started`);
      void cleanup().then((text) => {
        log(text);
        process.exit(signal === "SIGINT" ? 130 : 143);
      });
    });
}

/**
 * Runs a runner's measurement in a scratch directory, every child stopped by pid at the
 * end, on an error and on Ctrl-C: its result and the cleanup report. On failure, prints
 * "bench:NAME failed" with the report and exits 1.
 */
export async function measureWithCleanup<T>(name: string, measure: (tmp: string) => Promise<T>): Promise<{ result: T; cleanup: string }> {
  const tmp = mkdtempSync(join(tmpdir(), `mesh-${name}-`));
  stopOnSignals(() => stopAndReport(tmp), (line) => console.error(line));
  let result: T | undefined;
  let failure: Error | undefined;
  try {
    result = await measure(tmp);
  } catch (err) {
    failure = err as Error;
  }
  const cleanup = await stopAndReport(tmp);
  if (failure || result === undefined) {
    console.error(`bench:${name} failed: ${failure?.message}\n${cleanup}`);
    process.exit(1);
  }
  return { result, cleanup };
}

/** Parses a runner's flags: the options, or the exit code after printing usage or the error. */
export function readOptions<T>(parse: (argv: string[]) => T | "help", usage: string, log: (line: string) => void): T | number {
  let opts: T | "help";
  try {
    opts = parse(Bun.argv.slice(2));
  } catch (err) {
    log(`${(err as Error).message}\n\n${usage}`);
    return 64;
  }
  if (opts !== "help") return opts;
  console.log(usage);
  return 0;
}
