/**
 * Resource use of a process, read from /proc: resident memory (VmRSS, and its private
 * part RssAnon) and CPU time (utime + stime, every thread included). Linux only, like the rest of the bench.
 */
import { readdirSync, readFileSync } from "node:fs";

function read(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return undefined;
  }
}

/** Fields of /proc/PID/stat after the command name, which may itself hold spaces and parentheses. */
function statFields(pid: number): string[] | undefined {
  const stat = read(`/proc/${pid}/stat`);
  if (!stat) return undefined;
  return stat.slice(stat.lastIndexOf(")") + 2).split(" ");
}

export function readComm(pid: number): string | undefined {
  return read(`/proc/${pid}/comm`)?.trim();
}

/** Running or sleeping; a zombie has exited already and only waits to be reaped. */
export function isAlive(pid: number): boolean {
  const state = statFields(pid)?.[0];
  return state !== undefined && state !== "Z" && state !== "X";
}

export function parentOf(pid: number): number | undefined {
  const ppid = statFields(pid)?.[1];
  return ppid === undefined ? undefined : Number(ppid);
}

/** Direct children of a process, by scanning /proc (needs no CONFIG_PROC_CHILDREN). */
export function childrenOf(pid: number): number[] {
  return readdirSync("/proc")
    .filter((name) => /^\d+$/.test(name))
    .map(Number)
    .filter((p) => parentOf(p) === pid);
}

const statusKb = (status: string, field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB$`, "m").exec(status)?.[1] ?? 0);

export function rssKb(pid: number): number {
  return statusKb(read(`/proc/${pid}/status`) ?? "", "VmRSS");
}

/**
 * Resident memory and its private part. VmRSS counts the pages of the executable file
 * too, and those are shared by every process running the same binary (a node's
 * sidecars); RssAnon is what one more such process adds.
 */
export function memoryKb(pid: number): { rss: number; private: number } {
  const status = read(`/proc/${pid}/status`) ?? "";
  return { rss: statusKb(status, "VmRSS"), private: statusKb(status, "RssAnon") };
}

const CLOCK_TICKS = (() => {
  const out = Bun.spawnSync(["getconf", "CLK_TCK"]).stdout.toString().trim();
  return Number(out) > 0 ? Number(out) : 100;
})();

/** CPU seconds a process has used so far, user and system. */
export function cpuSeconds(pid: number): number {
  const f = statFields(pid);
  if (!f) return 0;
  // utime and stime are fields 14 and 15 of stat; fields[0] here is field 3 (state).
  return (Number(f[11]) + Number(f[12])) / CLOCK_TICKS;
}

/** Whole-machine CPU time so far, from the first line of /proc/stat: busy and idle (idle + iowait), seconds. */
export function machineCpuSeconds(): { busy: number; idle: number } {
  const fields = (read("/proc/stat") ?? "").split("\n", 1)[0]!.trim().split(/\s+/).slice(1, 9).map(Number);
  // user nice system idle iowait irq softirq steal
  const idle = (fields[3] ?? 0) + (fields[4] ?? 0);
  const busy = fields.reduce((a, b) => a + b, 0) - idle;
  return { busy: busy / CLOCK_TICKS, idle: idle / CLOCK_TICKS };
}
