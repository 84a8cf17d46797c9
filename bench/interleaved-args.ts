/**
 * The flags every interleaved benchmark of the pair takes (bench:grpc, bench:tcp): quick,
 * JSON, timings, priming, which mesh and which topologies. Each bench adds its own loads.
 */
import { whole } from "./args.ts";

export interface InterleavedOptions<Id extends string> {
  quick: boolean;
  json?: string;
  durationS: number;
  rounds: number;
  warmupS: number;
  /** Unmeasured load per topology before the first round, at the largest load. */
  primeS: number;
  mesh?: string;
  only: Id[];
}

/** Their node:util parseArgs declarations, spread beside a bench's own. */
export const INTERLEAVED_FLAGS = {
  quick: { type: "boolean", default: false },
  json: { type: "string" },
  duration: { type: "string" },
  rounds: { type: "string" },
  warmup: { type: "string" },
  prime: { type: "string" },
  mesh: { type: "string" },
  only: { type: "string" },
  help: { type: "boolean", short: "h", default: false },
} as const;

interface InterleavedValues {
  quick?: boolean;
  json?: string;
  duration?: string;
  rounds?: string;
  warmup?: string;
  prime?: string;
  mesh?: string;
  only?: string;
}

/** The common flags' values, checked; defaults: 3 rounds of 5 s, 1 s warm-up, 5 s priming (quick: 1 round of 1 s, none). */
export function interleavedOptions<Id extends string>(values: InterleavedValues, topologyIds: readonly Id[]): InterleavedOptions<Id> {
  const quick = values.quick ?? false;
  const only = (values.only ?? topologyIds.join(",")).split(",").map((s) => s.trim());
  for (const id of only) if (!(topologyIds as readonly string[]).includes(id)) throw new Error(`--only: unknown topology "${id}"`);
  return {
    quick,
    json: values.json,
    // Whole seconds, as the HTTP/1.1 bench takes them.
    durationS: whole(values.duration ?? (quick ? "1" : "5"), "--duration", 1),
    rounds: whole(values.rounds ?? (quick ? "1" : "3"), "--rounds", 1),
    warmupS: whole(values.warmup ?? (quick ? "0" : "1"), "--warmup", 0),
    primeS: whole(values.prime ?? (quick ? "0" : "5"), "--prime", 0),
    mesh: values.mesh,
    // In the order of the topology list whatever the order given: the first round's order is fixed.
    only: topologyIds.filter((id) => only.includes(id)),
  };
}
