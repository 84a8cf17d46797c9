/** Runs one bounded load: wrk when installed (or asked for), else bench/load.ts. */
import { join } from "node:path";
import { SERVICE_HOST } from "./check.ts";
import { findTool, toolVersion } from "./external.ts";
import type { LoadResult } from "./load-result.ts";
import { runToEnd, spawn, tail } from "./procs.ts";
import { parseWrk, wrkArgs } from "./wrk.ts";

export interface Loader {
  kind: "wrk" | "bun";
  describe: string;
  path: string;
}

export function pickLoader(choice: "wrk" | "bun" | undefined): Loader {
  const wrk = findTool("wrk");
  if (choice === "wrk" && !wrk) throw new Error("--loader wrk: wrk is not installed");
  if (wrk && choice !== "bun") return { kind: "wrk", path: wrk, describe: toolVersion([wrk, "-v"], /^wrk \S+/) };
  const why = wrk ? "" : ", wrk not installed";
  return { kind: "bun", path: process.execPath, describe: `bench/load.ts (bun ${Bun.version}${why})` };
}

export async function runLoad(loader: Loader, url: string, connections: number, durationS: number): Promise<LoadResult> {
  const cmd =
    loader.kind === "wrk"
      ? wrkArgs(loader.path, url, SERVICE_HOST, connections, durationS)
      : [loader.path, join(import.meta.dir, "load.ts"), "--url", url, "--connections", String(connections), "--duration", String(durationS), "--host", SERVICE_HOST];
  const child = spawn(`${loader.kind} c${connections}`, cmd);
  // Both generators stop themselves at the duration; this limit only catches a hung one.
  const code = await runToEnd(child, (durationS + 20) * 1000);
  await child.drained;
  if (code !== 0) throw new Error(`${loader.kind} exited ${code}: ${tail(child.stderr())}`);
  const out = child.stdout();
  return loader.kind === "wrk" ? parseWrk(out) : (JSON.parse(out.trim().split("\n").pop()!) as LoadResult);
}
