/** Command line of `npm run bench`. */
import { parseArgs } from "node:util";

export const TOPOLOGY_IDS = ["direct", "relay-one", "mesh-one", "nginx-one", "haproxy-one", "mesh-pair", "nginx-pair", "haproxy-pair"] as const;

export interface Options {
  quick: boolean;
  json?: string;
  durationS: number;
  rounds: number;
  warmupS: number;
  connections: number[];
  loader?: "wrk" | "bun";
  mesh?: string;
  only: Set<string>;
  /** POST requests with a body of this many bytes; undefined: GET. */
  post?: number;
}

export const USAGE = `usage: npm run bench -- [options]

  --quick              smoke test: every topology once, 1 s per cell, no warm-up (CI)
  --json FILE          also write the results as JSON
  --duration SECONDS   length of each measured cell (whole seconds; default 5, quick 1)
  --rounds N           interleaved rounds; medians are reported (default 3, quick 1)
  --warmup SECONDS     load per topology before measuring (default 2, quick 0)
  --connections LIST   concurrency levels (default 1,32)
  --loader wrk|bun     load generator (default: wrk when installed, else bench/load.ts)
  --mesh PATH|source   mesh binary to run (default: dist/mesh if built, else source)
  --only LIST          topologies to run, of: ${TOPOLOGY_IDS.join(", ")}
  --post BYTES         send POST requests with a body of BYTES, at most 16384 (default: GET)
`;

/** A flag's whole-number value, at least `min`; throws naming the flag and what it got. */
export function whole(text: string, flag: string, min: number): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < min) throw new Error(`${flag}: expected a whole number ≥ ${min}, got "${text}"`);
  return n;
}

/** Small bodies only: each request goes out in one write, as a real client's small POST would. */
const MAX_POST_BYTES = 16 * 1024;

function postBytes(text: string): number {
  const n = whole(text, "--post", 1);
  if (n > MAX_POST_BYTES) throw new Error(`--post: at most ${MAX_POST_BYTES} bytes, got ${n}`);
  return n;
}

export function parseOptions(argv: string[]): Options | "help" {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: "boolean", default: false },
      json: { type: "string" },
      duration: { type: "string" },
      rounds: { type: "string" },
      warmup: { type: "string" },
      connections: { type: "string", default: "1,32" },
      loader: { type: "string" },
      mesh: { type: "string" },
      only: { type: "string" },
      post: { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) return "help";
  const quick = values.quick ?? false;
  if (values.loader !== undefined && values.loader !== "wrk" && values.loader !== "bun") throw new Error(`--loader: expected wrk or bun, got "${values.loader}"`);
  const only = new Set((values.only ?? TOPOLOGY_IDS.join(",")).split(",").map((s) => s.trim()));
  for (const id of only) if (!(TOPOLOGY_IDS as readonly string[]).includes(id)) throw new Error(`--only: unknown topology "${id}"`);
  return {
    quick,
    json: values.json,
    // wrk takes whole seconds only, so every generator does.
    durationS: whole(values.duration ?? (quick ? "1" : "5"), "--duration", 1),
    rounds: whole(values.rounds ?? (quick ? "1" : "3"), "--rounds", 1),
    warmupS: whole(values.warmup ?? (quick ? "0" : "2"), "--warmup", 0),
    connections: (values.connections ?? "1,32").split(",").map((c) => whole(c.trim(), "--connections", 1)),
    loader: values.loader as Options["loader"],
    mesh: values.mesh,
    only,
    post: values.post === undefined ? undefined : postBytes(values.post),
  };
}
