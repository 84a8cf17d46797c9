/** Runs wrk and reads its report (with --latency) into a LoadResult. */
import type { LoadResult } from "./load-result.ts";

const UNIT_MS: Record<string, number> = { us: 0.001, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

export function wrkArgs(wrk: string, url: string, host: string, connections: number, durationS: number, script?: string): string[] {
  // One thread: the machine has two cores and the proxies under test need them more.
  return [wrk, "-t1", `-c${connections}`, `-d${durationS}s`, "--latency", ...(script ? ["-s", script] : []), "-H", `Host: ${host}`, url];
}

/** A wrk script that makes every request a POST with a body of `bytes`. */
export function wrkPostScript(bytes: number): string {
  return `wrk.method = "POST"\nwrk.body = string.rep("y", ${bytes})\nwrk.headers["Content-Type"] = "application/octet-stream"\n`;
}

function latencyMs(text: string, label: string): number {
  const m = new RegExp(`^\\s*${label}\\s+([\\d.]+)(us|ms|s|m|h)\\s*$`, "m").exec(text);
  return m ? Number(m[1]) * UNIT_MS[m[2]!]! : NaN;
}

export function parseWrk(text: string): LoadResult {
  const done = /(\d+) requests in ([\d.]+)(us|ms|s|m|h)/.exec(text);
  if (!done) throw new Error(`wrk printed no result:\n${text}`);
  const requests = Number(done[1]);
  const durationS = (Number(done[2]) * UNIT_MS[done[3]!]!) / 1000;
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(text);
  const errors = socket ? socket.slice(1).reduce((a, n) => a + Number(n), 0) : 0;
  const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(text)?.[1] ?? 0);
  return { requests, durationS, reqPerSec: requests / durationS, p50Ms: latencyMs(text, "50%"), p99Ms: latencyMs(text, "99%"), errors, non2xx };
}
