/**
 * Preloaded into the proxy under test by bench/alloc/run.ts: on SIGUSR2, one line on
 * stderr with the count of live heap cells by type (bun:jsc heapStats), numbered. Between
 * two counts with no collection in between, the difference is what was allocated.
 */
import { heapStats } from "bun:jsc";
import { CENSUS_MARK } from "./census.ts";

let counted = 0;
process.on("SIGUSR2", () => {
  process.stderr.write(`${CENSUS_MARK}${++counted} ${JSON.stringify(heapStats().objectTypeCounts)}\n`);
});
