/** Shared plumbing for proxies that are not mesh (nginx, haproxy): find, start, wait, account for workers. */
import { existsSync } from "node:fs";
import { childrenOf } from "./proc-stats.ts";
import { spawn, tail, trackDescendant, type Child } from "./procs.ts";
import { waitForPort } from "./check.ts";

/** The tool's path, also when /usr/sbin is not on PATH (non-root shells). */
export function findTool(name: string): string | undefined {
  return Bun.which(name) ?? ["/usr/sbin", "/usr/local/sbin"].map((d) => `${d}/${name}`).find((p) => existsSync(p));
}

/** The first line a `-v` prints, or just the part `pick` matches in it. */
export function toolVersion(cmd: string[], pick?: RegExp): string {
  const r = Bun.spawnSync(cmd, { stdout: "pipe", stderr: "pipe", timeout: 5000 });
  const line = (r.stdout.toString() + r.stderr.toString()).split("\n")[0]!.trim();
  return (pick && pick.exec(line)?.[0]) || line;
}

/**
 * Starts a proxy in the foreground and waits for its listener. `logFile` is read for the
 * reason when it dies. Returns every pid the proxy runs as, workers included.
 */
export async function startForeground(
  label: string,
  cmd: string[],
  port: number,
  opts: { workers: number; logFile?: () => string },
): Promise<{ child: Child; pids: number[] }> {
  const child = spawn(label, cmd);
  const gone = () =>
    child.proc.exitCode !== null ? `${label} exited ${child.proc.exitCode}\n${tail(child.stderr() + (opts.logFile?.() ?? ""))}` : undefined;
  await waitForPort(port, 10_000, gone);
  // A master (nginx) listens before its workers exist; give them a moment to appear.
  let workers = childrenOf(child.pid);
  for (let i = 0; i < 100 && workers.length < opts.workers; i++) {
    await Bun.sleep(20);
    workers = childrenOf(child.pid);
  }
  for (const w of workers) trackDescendant(w);
  return { child, pids: [child.pid, ...workers] };
}
