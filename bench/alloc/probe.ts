/**
 * Preloaded into the proxy under test by bench/alloc/run.ts: on SIGUSR2, one line on
 * stderr with the count of live heap cells by type (bun:jsc heapStats), numbered. Between
 * two counts with no collection in between, the difference is what was allocated.
 * On SIGWINCH, by turns: a full collection (the old generation is then exactly what is
 * live), or a young one, whose GC log line says what the requests since kept reachable.
 */
import { edenGC, fullGC, heapStats } from "bun:jsc";
import { CENSUS_MARK, KEPT_MARK } from "./census.ts";

let counted = 0;
process.on("SIGUSR2", () => {
  process.stderr.write(`${CENSUS_MARK}${++counted} ${JSON.stringify(heapStats().objectTypeCounts)}\n`);
});

let young = false;
process.on("SIGWINCH", () => {
  if (young) edenGC();
  else fullGC();
  process.stderr.write(`${KEPT_MARK}${young ? "end" : "start"}\n`);
  young = !young;
});
