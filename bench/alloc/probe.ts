/**
 * Preloaded into the proxy under test by bench/alloc/run.ts: on SIGUSR2, one line on
 * stderr with the count of live heap cells by type (bun:jsc heapStats). Between two
 * counts with no collection in between, the difference is what was allocated.
 */
import { heapStats } from "bun:jsc";

export const CENSUS_MARK = "ALLOC-CENSUS ";

process.on("SIGUSR2", () => {
  process.stderr.write(`${CENSUS_MARK}${JSON.stringify(heapStats().objectTypeCounts)}\n`);
});
