/** Command line of `npm run bench:grpc`, in the style of the HTTP/1.1 bench's (../args.ts). */
import { parseArgs } from "node:util";
import { whole } from "../args.ts";
import { INTERLEAVED_FLAGS, interleavedOptions, type InterleavedOptions } from "../interleaved-args.ts";
import type { Shape } from "./h2load.ts";
import { TOPOLOGY_IDS, type TopologyId } from "./topology.ts";

export interface Options extends InterleavedOptions<TopologyId> {
  /** The load shapes, smallest first. */
  shapes: Shape[];
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
    options: { ...INTERLEAVED_FLAGS, connections: { type: "string", default: "1,4" }, streams: { type: "string", default: "1,16" } },
  });
  if (values.help) return "help";
  const common = interleavedOptions(values, TOPOLOGY_IDS);
  const connections = list(values.connections ?? "1,4", "--connections");
  const streams = list(values.streams ?? "1,16", "--streams");
  if (connections.length !== streams.length) throw new Error(`--connections and --streams pair up: got ${connections.length} and ${streams.length} values`);
  const shapes = connections.map((c, i) => ({ connections: c, streams: streams[i]! }));
  // A smoke test needs one shape: the first, the smallest by default.
  return { ...common, shapes: common.quick ? shapes.slice(0, 1) : shapes };
}
