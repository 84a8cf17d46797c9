/** Command line of `npm run bench:grpc`, in the style of the HTTP/1.1 bench's (../args.ts). */
import { parseArgs } from "node:util";
import { whole } from "../args.ts";
import type { Shape } from "./h2load.ts";
import { TOPOLOGY_IDS, type TopologyId } from "./topology.ts";

export interface Options {
  quick: boolean;
  json?: string;
  durationS: number;
  rounds: number;
  warmupS: number;
  /** Unmeasured load per topology before the first round, at the largest shape. */
  primeS: number;
  /** The load shapes, smallest first. */
  shapes: Shape[];
  mesh?: string;
  only: TopologyId[];
}

export const USAGE = `usage: npm run bench:grpc -- [options]

  --quick              smoke test: every topology once, 1 s, no warm-up, first shape only (CI)
  --json FILE          also write the results as JSON
  --duration SECONDS   measured length of each cell (whole seconds; default 5, quick 1)
  --warmup SECONDS     h2load's warm-up before each cell's measurement (default 1, quick 0)
  --prime SECONDS      unmeasured load per topology before the first round, at the largest shape
                       (default 5, quick 0): mesh's JIT takes seconds of load to compile its hot paths
  --rounds N           interleaved rounds; medians are reported (default 3, quick 1)
  --connections LIST   h2load connections per shape (default 1,4)
  --streams LIST       concurrent streams per connection, paired with --connections (default 1,16)
  --mesh PATH|source   mesh binary to run (default: dist/mesh if built, else source)
  --only LIST          topologies to run, of: ${TOPOLOGY_IDS.join(", ")}
`;

const list = (text: string, flag: string) => text.split(",").map((n) => whole(n.trim(), flag, 1));

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
      connections: { type: "string", default: "1,4" },
      streams: { type: "string", default: "1,16" },
      mesh: { type: "string" },
      only: { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) return "help";
  const quick = values.quick ?? false;
  const connections = list(values.connections ?? "1,4", "--connections");
  const streams = list(values.streams ?? "1,16", "--streams");
  if (connections.length !== streams.length) throw new Error(`--connections and --streams pair up: got ${connections.length} and ${streams.length} values`);
  const shapes = connections.map((c, i) => ({ connections: c, streams: streams[i]! }));
  const only = (values.only ?? TOPOLOGY_IDS.join(",")).split(",").map((s) => s.trim());
  for (const id of only) if (!(TOPOLOGY_IDS as readonly string[]).includes(id)) throw new Error(`--only: unknown topology "${id}"`);
  return {
    quick,
    json: values.json,
    // Whole seconds, as the HTTP/1.1 bench takes them.
    durationS: whole(values.duration ?? (quick ? "1" : "5"), "--duration", 1),
    rounds: whole(values.rounds ?? (quick ? "1" : "3"), "--rounds", 1),
    warmupS: whole(values.warmup ?? (quick ? "0" : "1"), "--warmup", 0),
    primeS: whole(values.prime ?? (quick ? "0" : "5"), "--prime", 0),
    // A smoke test needs one shape: the first, the smallest by default.
    shapes: quick ? shapes.slice(0, 1) : shapes,
    mesh: values.mesh,
    // In the order of TOPOLOGY_IDS whatever the order given: the first round's order is fixed.
    only: TOPOLOGY_IDS.filter((id) => only.includes(id)),
  };
}
