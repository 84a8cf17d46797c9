/**
 * The load generator of `npm run bench:tcp`, run as its own process by the runner
 * (load.ts): round trips on C persistent connections, or bulk transfers (see
 * round-trips.ts and bulk.ts). It prints the edges of its measured window as they happen,
 * then its result as one JSON line, and exits; every phase is bounded in time and count.
 *
 *   bun bench/tcp/client.ts rr   --port P --connections C --warmup-ms W --duration-ms D [--max N]
 *   bun bench/tcp/client.ts bulk --port P --bytes B        --warmup-ms W --duration-ms D [--max N]
 */
import { parseArgs } from "node:util";
import { bulk } from "./bulk.ts";
import { roundTrips } from "./round-trips.ts";
import { pattern, type ClientResult } from "./wire.ts";

const CONNECT_TIMEOUT_MS = 5_000;
/** After the window, in-flight echoes and the service's FIN through the proxies. */
const CLOSE_TIMEOUT_MS = 3_000;

function number(values: Record<string, string | boolean | undefined>, name: string, fallback?: number): number {
  const text = values[name];
  const n = typeof text === "string" ? Number(text) : fallback;
  if (n === undefined || !Number.isFinite(n) || n < 0) throw new Error(`client: --${name} needs a number ≥ 0, got "${String(text)}"`);
  return n;
}

async function main(): Promise<ClientResult> {
  const { positionals, values } = parseArgs({
    args: process.argv.slice(2),
    allowPositionals: true,
    options: {
      port: { type: "string" },
      connections: { type: "string" },
      bytes: { type: "string" },
      "warmup-ms": { type: "string" },
      "duration-ms": { type: "string" },
      max: { type: "string" },
    },
  });
  const common = { port: number(values, "port"), warmupMs: number(values, "warmup-ms", 0), durationMs: number(values, "duration-ms"), connectTimeoutMs: CONNECT_TIMEOUT_MS };
  if (positionals[0] === "rr")
    return roundTrips({ ...common, connections: Math.max(1, number(values, "connections", 1)), maxRoundTrips: number(values, "max", 50_000_000), closeTimeoutMs: CLOSE_TIMEOUT_MS });
  if (positionals[0] === "bulk") {
    const bytes = Math.max(1, number(values, "bytes"));
    // Each transfer may take as long as moving its bytes at 2 MB/s, and at least 30 s: far beyond any healthy path.
    return bulk({ ...common, bytes, maxTransfers: number(values, "max", 10_000), transferTimeoutMs: Math.max(30_000, bytes / 2000) }, pattern());
  }
  throw new Error(`client: mode "rr" or "bulk", got "${positionals[0] ?? ""}"`);
}

console.log(JSON.stringify({ result: await main() }));
process.exit(0);
