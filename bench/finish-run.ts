/** The end of an interleaved benchmark run (bench:grpc, bench:tcp): the report, the JSON, and the smoke-test verdict. */
import { writeFileSync } from "node:fs";
import { survivors } from "./procs.ts";

export interface RunOutcome<M, S, C> {
  meta: M;
  summaries: S[];
  cells: C[];
}

/** What the verdict reads of a topology's summary. */
interface Verdicted {
  id: string;
  status: string;
  levels: { errors: number }[];
}

/**
 * Prints `report`, writes every number to `json` when asked, and returns the exit status:
 * 0 when every topology that could run served without an error and no process outlived
 * the run, else 1. Timings never change it.
 */
export function finishRun<M, S extends Verdicted, C, R>(outcome: RunOutcome<M, S, C>, ratios: R[], report: string, json: string | undefined, log: (line: string) => void): number {
  const { meta, summaries, cells } = outcome;
  console.log(report);
  if (json) writeFileSync(json, JSON.stringify({ meta, topologies: summaries, ratios, cells, cleanup: survivors() }, null, 2) + "\n");
  const broken = summaries.filter((s) => s.status === "failed" || (s.status === "ok" && s.levels.some((l) => l.errors > 0)));
  if (broken.length) log(`FAILED: ${broken.map((s) => s.id).join(", ")}`);
  return broken.length || survivors().alive.length ? 1 : 0;
}
