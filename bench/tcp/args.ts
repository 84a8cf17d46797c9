/** Command line of `npm run bench:tcp`, in the style of the other benches' (../args.ts, ../grpc/args.ts). */
import { parseArgs } from "node:util";
import { whole } from "../args.ts";
import type { Load } from "./load.ts";
import { TOPOLOGY_IDS, type TopologyId } from "./topology.ts";

export interface Options {
  quick: boolean;
  json?: string;
  durationS: number;
  rounds: number;
  warmupS: number;
  primeS: number;
  /** Round trips at each connection count, then bulk transfers: in this order in every round. */
  loads: Load[];
  mesh?: string;
  only: TopologyId[];
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
    options: {
      quick: { type: "boolean", default: false },
      json: { type: "string" },
      duration: { type: "string" },
      rounds: { type: "string" },
      warmup: { type: "string" },
      prime: { type: "string" },
      connections: { type: "string", default: "1,16" },
      "bulk-mib": { type: "string", default: "64" },
      mesh: { type: "string" },
      only: { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) return "help";
  const quick = values.quick ?? false;
  const connections = (values.connections ?? "1,16").split(",").map((c) => whole(c.trim(), "--connections", 1));
  for (const c of connections) if (c > MAX_CONNECTIONS) throw new Error(`--connections: at most ${MAX_CONNECTIONS}, got ${c}`);
  const bulkMib = whole(values["bulk-mib"] ?? "64", "--bulk-mib", 0);
  if (bulkMib > MAX_BULK_MIB) throw new Error(`--bulk-mib: at most ${MAX_BULK_MIB}, got ${bulkMib}`);
  const only = (values.only ?? TOPOLOGY_IDS.join(",")).split(",").map((s) => s.trim());
  for (const id of only) if (!(TOPOLOGY_IDS as readonly string[]).includes(id)) throw new Error(`--only: unknown topology "${id}"`);
  const loads: Load[] = [...new Set(connections)].map((c) => ({ kind: "rr", connections: c }));
  if (bulkMib > 0) loads.push({ kind: "bulk", bytes: bulkMib * 2 ** 20 });
  return {
    quick,
    json: values.json,
    durationS: whole(values.duration ?? (quick ? "1" : "5"), "--duration", 1),
    rounds: whole(values.rounds ?? (quick ? "1" : "3"), "--rounds", 1),
    warmupS: whole(values.warmup ?? (quick ? "0" : "1"), "--warmup", 0),
    primeS: whole(values.prime ?? (quick ? "0" : "5"), "--prime", 0),
    loads,
    mesh: values.mesh,
    // In the order of TOPOLOGY_IDS whatever the order given: the first round's order is fixed.
    only: TOPOLOGY_IDS.filter((id) => only.includes(id)),
  };
}
