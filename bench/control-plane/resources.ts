/** The control plane's resources, from /proc: RSS (sampled for a peak), CPU time, open descriptors. */
import { readdirSync, readFileSync } from "node:fs";
import { cpuSeconds, rssKb } from "../proc-stats.ts";

export const rssMb = (pid: number) => rssKb(pid) / 1024;
export { cpuSeconds };

export function openFds(pid: number): number {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return NaN;
  }
}

/** Soft limit on open files of a process, from /proc/PID/limits. */
export function fdLimit(pid: number | "self" = "self"): number {
  const m = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync(`/proc/${pid}/limits`, "utf8"));
  return !m || m[1] === "unlimited" ? Infinity : Number(m[1]);
}

/** Median RSS over a few samples, after a pause: one reading can catch a collection mid-way. */
export async function settledRssMb(pid: number, pauseMs = 1000): Promise<number> {
  await Bun.sleep(pauseMs);
  const samples: number[] = [];
  for (let i = 0; i < 5; i++) {
    samples.push(rssMb(pid));
    await Bun.sleep(100);
  }
  return samples.sort((a, b) => a - b)[2]!;
}

/** Samples RSS every 100 ms until stopped; returns the peak. */
export function peakSampler(pid: number): { stop(): number } {
  let peak = rssMb(pid);
  const timer = setInterval(() => (peak = Math.max(peak, rssMb(pid))), 100);
  return {
    stop() {
      clearInterval(timer);
      return Math.max(peak, rssMb(pid));
    },
  };
}
