/** Runs one bounded load: wrk when installed (or asked for), else bench/load.ts. */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { SERVICE_HOST } from "./check.ts";
import { findTool, toolVersion } from "./external.ts";
import type { LoadResult } from "./load-result.ts";
import { runToEnd, spawn, tail } from "./procs.ts";
import { parseWrk, wrkArgs, wrkPostScript } from "./wrk.ts";

export interface Loader {
  kind: "wrk" | "bun";
  describe: string;
  path: string;
  /** POST bodies of this many bytes; undefined: GET. */
  post?: number;
  /** wrk's script for POST requests. */
  script?: string;
}

/** `tmp`: where a wrk script is written when requests are POSTs. */
export function pickLoader(choice: "wrk" | "bun" | undefined, post: number | undefined, tmp: string): Loader {
  const wrk = findTool("wrk");
  const requests = post === undefined ? "GET" : `POST with ${post}-byte bodies`;
  if (choice === "wrk" && !wrk) throw new Error("--loader wrk: wrk is not installed");
  if (wrk && choice !== "bun") {
    const script = post === undefined ? undefined : join(tmp, "post.lua");
    if (script) writeFileSync(script, wrkPostScript(post!));
    return { kind: "wrk", path: wrk, post, script, describe: `${toolVersion([wrk, "-v"], /^wrk \S+/)} · ${requests}` };
  }
  const why = wrk ? "" : ", wrk not installed";
  return { kind: "bun", path: process.execPath, post, describe: `bench/load.ts (bun ${Bun.version}${why}) · ${requests}` };
}

export async function runLoad(loader: Loader, url: string, connections: number, durationS: number): Promise<LoadResult> {
  const cmd =
    loader.kind === "wrk"
      ? wrkArgs(loader.path, url, SERVICE_HOST, connections, durationS, loader.script)
      : [
          loader.path, join(import.meta.dir, "load.ts"), "--url", url, "--connections", String(connections), "--duration", String(durationS), "--host", SERVICE_HOST,
          ...(loader.post === undefined ? [] : ["--post", String(loader.post)]),
        ];
  const child = spawn(`${loader.kind} c${connections}`, cmd);
  // Both generators stop themselves at the duration; this limit only catches a hung one.
  const code = await runToEnd(child, (durationS + 20) * 1000);
  await child.drained;
  if (code !== 0) throw new Error(`${loader.kind} exited ${code}: ${tail(child.stderr())}`);
  const out = child.stdout();
  return loader.kind === "wrk" ? parseWrk(out) : (JSON.parse(out.trim().split("\n").pop()!) as LoadResult);
}
