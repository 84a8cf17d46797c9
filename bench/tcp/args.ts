/** Command line of `npm run bench:tcp`, in the style of the other benches' (../args.ts, ../grpc/args.ts). */
import { parseArgs } from "node:util";
import { whole } from "../args.ts";
import { INTERLEAVED_FLAGS, interleavedOptions, type InterleavedOptions } from "../interleaved-args.ts";
import type { Load } from "./load.ts";
import { TOPOLOGY_IDS, type TopologyId } from "./topology.ts";

export interface Options extends InterleavedOptions<TopologyId> {
  /** Round trips at each connection count, then bulk transfers: in this order in every round. */
  loads: Load[];
}

/** Bulk transfers are bounded: each is sent and held in flight by the proxies, and checked by the client. */
const MAX_BULK_MIB = 1024;
const MAX_CONNECTIONS = 1000;

export const USAGE = `usage: npm run bench:tcp -- [options]

  --quick              smoke test: one round, 1 s per cell, no warm-up or priming (CI)
  --json FILE          also write the results as JSON
  --duration SECONDS   measured length of each cell (whole seconds; default 5, quick 1)
  --warmup SECONDS     the client's unmeasured load before each cell's window (default 1, quick 0)
  --prime SECONDS      unmeasured round trips per topology before the first round, at the largest
                       connection count (default 5, quick 0): mesh's JIT compiles its hot paths under load
  --rounds N           interleaved rounds; medians are reported (default 3, quick 1)
  --connections LIST   persistent connections for the round-trip cells (default 1,16; at most ${MAX_CONNECTIONS})
  --bulk-mib N         MiB each bulk transfer sends one way and reads back (default 64, at most ${MAX_BULK_MIB}; 0: no bulk cells)
  --mesh PATH|source   mesh binary to run (default: dist/mesh if built, else source)
  --only LIST          topologies to run, of: ${TOPOLOGY_IDS.join(", ")}
`;

export function parseOptions(argv: string[]): Options | "help" {
  const { values } = parseArgs({
    args: argv,
    options: { ...INTERLEAVED_FLAGS, connections: { type: "string", default: "1,16" }, "bulk-mib": { type: "string", default: "64" } },
  });
  if (values.help) return "help";
  const common = interleavedOptions(values, TOPOLOGY_IDS);
  const connections = (values.connections ?? "1,16").split(",").map((c) => whole(c.trim(), "--connections", 1));
  for (const c of connections) if (c > MAX_CONNECTIONS) throw new Error(`--connections: at most ${MAX_CONNECTIONS}, got ${c}`);
  const bulkMib = whole(values["bulk-mib"] ?? "64", "--bulk-mib", 0);
  if (bulkMib > MAX_BULK_MIB) throw new Error(`--bulk-mib: at most ${MAX_BULK_MIB}, got ${bulkMib}`);
  const loads: Load[] = [...new Set(connections)].map((c) => ({ kind: "rr", connections: c }));
  if (bulkMib > 0) loads.push({ kind: "bulk", bytes: bulkMib * 2 ** 20 });
  return { ...common, loads };
}
