/**
 * The processes the demo starts: each must print one JSON line when ready; its stderr
 * is kept (the last few KB) to explain a failure. Children run in their own session, so
 * a terminal's Ctrl-C reaches only the demo, which then stops them in order, by pid.
 */
import type { Subprocess } from "bun";
import { MeshError } from "../core/errors.ts";

type Proc = Subprocess<"pipe" | "ignore", "pipe", "pipe">;
const TAIL_BYTES = 4096;

export interface Child {
  name: string;
  pid: number;
  /** The JSON line it printed once ready. */
  ready: Record<string, unknown>;
}

export interface StartOptions {
  timeoutMs?: number;
  /** Keep stdin open: a child that watches it exits when the demo goes away. */
  stdinPipe?: boolean;
}

export class Children {
  private procs: { name: string; proc: Proc }[] = [];
  private stopping = false;

  constructor(private readonly env: Record<string, string>, private readonly cwd: string, private readonly onStarted: (name: string, pid: number) => void = () => {}) {}

  /** Starts `argv` and waits for its ready line; throws naming the child if it never comes. */
  async start(name: string, argv: string[], opts: StartOptions = {}): Promise<Child> {
    if (this.stopping) throw new MeshError(`${name}: not started, the demo is stopping`);
    let proc: Proc;
    try {
      proc = Bun.spawn(argv, { cwd: this.cwd, env: this.env, stdin: opts.stdinPipe ? "pipe" : "ignore", stdout: "pipe", stderr: "pipe", detached: true }) as Proc;
    } catch (err) {
      const missing = (err as { code?: string }).code === "ENOENT";
      throw new MeshError(`${name}: cannot start ${argv[0]}${missing ? ": not found" : `: ${(err as Error).message}`}`);
    }
    this.procs.push({ name, proc });
    this.onStarted(name, proc.pid);
    let tail = "";
    const stderrDone = (async () => {
      for await (const chunk of proc.stderr) tail = (tail + new TextDecoder().decode(chunk)).slice(-TAIL_BYTES);
    })().catch(() => {});
    const stderrTail = () => tail.trim();
    const line = await readFirstLine(proc, opts.timeoutMs ?? 20_000);
    if (typeof line !== "string") {
      if (line.why === "timeout") proc.kill("SIGKILL");
      await Promise.race([stderrDone, Bun.sleep(500)]);
      const code = await proc.exited;
      const ended = proc.signalCode ? `was killed by ${proc.signalCode}` : `exited with code ${code}`;
      const why = line.why === "timeout" ? `not ready within ${(opts.timeoutMs ?? 20_000) / 1000}s` : `${ended} before it was ready`;
      throw new MeshError(`${name} did not start: ${why}${stderrTail() ? `\n${indent(stderrTail())}` : ""}`);
    }
    let ready: Record<string, unknown>;
    try {
      ready = JSON.parse(line) as Record<string, unknown>;
    } catch {
      throw new MeshError(`${name} did not start: expected a JSON ready line, got ${JSON.stringify(line.slice(0, 200))}`);
    }
    return { name, pid: proc.pid, ready };
  }

  pids(): Record<string, number> {
    return Object.fromEntries(this.procs.map((p) => [p.name, p.proc.pid]));
  }

  /** Calls `onExit` for a child that ends while the demo is not stopping it. */
  watch(onExit: (name: string, how: string) => void): void {
    for (const { name, proc } of this.procs)
      void proc.exited.then((code) => !this.stopping && onExit(name, proc.signalCode ? `killed by ${proc.signalCode}` : `exit code ${code}`));
  }

  /** SIGTERM to the children `which` selects (default all), SIGKILL to any still there after `graceMs`. */
  async stop(graceMs: number, which: (name: string) => boolean = () => true): Promise<void> {
    this.stopping = true;
    await Promise.all(this.procs.filter((p) => which(p.name)).map((p) => stopOne(p.proc, graceMs)));
  }

  /** At once, for a second Ctrl-C. */
  killAll(): void {
    this.stopping = true;
    for (const { proc } of this.procs) if (proc.exitCode === null && proc.signalCode === null) proc.kill("SIGKILL");
  }
}

async function stopOne(proc: Proc, graceMs: number): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  proc.kill("SIGTERM");
  let timer: Timer | undefined;
  const gone = await Promise.race([proc.exited.then(() => true), new Promise<false>((r) => (timer = setTimeout(() => r(false), graceMs)))]);
  clearTimeout(timer);
  if (!gone) {
    proc.kill("SIGKILL");
    await proc.exited;
  }
}

async function readFirstLine(proc: Proc, timeoutMs: number): Promise<string | { why: "timeout" | "exited" }> {
  const reader = proc.stdout.getReader();
  const decoder = new TextDecoder();
  let out = "";
  let timer: Timer | undefined;
  const timeout = new Promise<"timeout">((r) => (timer = setTimeout(() => r("timeout"), timeoutMs)));
  try {
    while (!out.includes("\n")) {
      const next = await Promise.race([reader.read(), timeout]);
      if (next === "timeout") return { why: "timeout" };
      if (next.done) return { why: "exited" };
      out += decoder.decode(next.value, { stream: true });
    }
  } finally {
    clearTimeout(timer);
    try {
      reader.releaseLock();
    } catch {
      // a read still pending on a child being killed
    }
  }
  // Nothing else on stdout matters, but it must keep draining so the child never blocks on it.
  void (async () => {
    for await (const _ of proc.stdout) void _;
  })().catch(() => {});
  return out.slice(0, out.indexOf("\n"));
}

function indent(text: string): string {
  return text.split("\n").map((l) => `    ${l}`).join("\n");
}
