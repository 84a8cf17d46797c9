/** Starts mesh processes for tests and stops every one of them by pid. */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Subprocess } from "bun";

const MAIN = join(import.meta.dir, "..", "..", "src", "main.ts");
const running = new Set<Subprocess>();
/** Each started process's stderr so far, read when all are stopped. */
const stderrOf = new Map<Subprocess, () => string>();

export interface MeshProcess {
  proc: Subprocess<"ignore", "pipe", "pipe">;
  /** The JSON line the command printed once ready. */
  ready: Record<string, unknown>;
  stderr: () => string;
}

export interface StartOptions {
  cwd?: string;
  timeoutMs?: number;
  /** Runs the command inside something, e.g. ["ip", "netns", "exec", "host1"]. */
  wrap?: string[];
  /** The environment, instead of this process's. */
  env?: Record<string, string | undefined>;
}

/** Runs `mesh ARGS` from source and waits for its first stdout line (its ready report). */
export function startMesh(args: string[], opts: StartOptions = {}): Promise<MeshProcess> {
  return startReady([process.execPath, MAIN, ...args], opts);
}

/**
 * The temporary directory of the processes started here: they are killed, not drained,
 * so what they leave there (a sidecar's tunnel sockets) goes with them in stopAll.
 */
let childTmp: string | undefined;
function childEnv(): Record<string, string | undefined> {
  childTmp ??= mkdtempSync(join(tmpdir(), "mesh-test-children-"));
  return { ...process.env, TMPDIR: childTmp };
}

/** Runs a command that prints one JSON line when ready, and waits for that line. */
export async function startReady(cmd: string[], opts: StartOptions = {}): Promise<MeshProcess> {
  const proc = Bun.spawn([...(opts.wrap ?? []), ...cmd], { cwd: opts.cwd, env: opts.env ?? childEnv(), stdout: "pipe", stderr: "pipe", stdin: "ignore" });
  running.add(proc);
  let err = "";
  void (async () => {
    for await (const chunk of proc.stderr) err += new TextDecoder().decode(chunk);
  })();
  const reader = proc.stdout.getReader();
  let out = "";
  const deadline = Date.now() + (opts.timeoutMs ?? 15_000);
  while (!out.includes("\n")) {
    const next = await Promise.race([reader.read(), Bun.sleep(Math.max(0, deadline - Date.now())).then(() => "timeout" as const)]);
    if (next === "timeout" || next.done) {
      proc.kill("SIGKILL");
      throw new Error(`${cmd.join(" ")} did not become ready: ${next === "timeout" ? "timeout" : "exited " + (await proc.exited)}\n${err}`);
    }
    out += new TextDecoder().decode(next.value);
  }
  reader.releaseLock();
  stderrOf.set(proc, () => err);
  return { proc, ready: JSON.parse(out.split("\n")[0]!), stderr: () => err };
}

/**
 * Stops every process started here. Then fails if one warned that listeners piled up on
 * an emitter (Node's MaxListenersExceededWarning): a leak per request or stream, which
 * no single test's assertions would see.
 */
export async function stopAll(): Promise<void> {
  for (const p of running) {
    if (p.exitCode === null) p.kill("SIGKILL");
    await p.exited;
  }
  const leaking = [...running].flatMap((p) => {
    const line = stderrOf.get(p)?.().split("\n").find((l) => l.includes("MaxListenersExceededWarning"));
    return line === undefined ? [] : [`pid ${p.pid}: ${line}`];
  });
  running.clear();
  stderrOf.clear();
  if (childTmp !== undefined) rmSync(childTmp, { recursive: true, force: true });
  childTmp = undefined;
  if (leaking.length > 0) throw new Error(`listeners piled up in a process the tests started:\n${leaking.join("\n")}`);
}

/** Runs `mesh ARGS` to completion. */
export function runMesh(args: string[], cwd?: string) {
  const p = Bun.spawnSync([process.execPath, MAIN, ...args], { cwd, stderr: "pipe" });
  return { code: p.exitCode, out: p.stdout.toString(), err: p.stderr.toString() };
}

/** Whether a process with this pid still exists (signal 0 probes without touching it). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
