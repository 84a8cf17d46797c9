/**
 * `npm run bench:grpc`: gRPC over HTTP/2 through the mesh sidecar pair, against a direct
 * call and an nginx pair, side by side in one run. Cells are interleaved (round after
 * round, the order rotated each pass) so a noisy neighbour on this shared machine hits
 * every topology alike; ratios are taken within each round for the same reason.
 * Every process started is stopped by pid: at the end, on error and on Ctrl-C.
 */
import { writeFileSync } from "node:fs";
import { cpus, loadavg, release } from "node:os";
import { join } from "node:path";
import { findTool, toolVersion } from "../external.ts";
import { int } from "../format.ts";
import { meshCommand, runMeshSync } from "../mesh-command.ts";
import { issueCerts } from "../pki.ts";
import { isClosing, measureWithCleanup, readOptions } from "../procs.ts";
import { finishRun, type RunOutcome } from "../finish-run.ts";
import { parseOptions, USAGE, type Options } from "./args.ts";
import { shapeName } from "./h2load.ts";
import { runH2load } from "./load.ts";
import { measure, type Cell } from "./measure.ts";
import { render, type Meta } from "./report.ts";
import { ratios, summarize, type Summary } from "./results.ts";
import { passOrder } from "./schedule.ts";
import { startTopologies } from "./setup.ts";
import type { GrpcTopology, TopologyId } from "./topology.ts";
import { AUTHORITY, grpcMessage, METHOD_PATH, PREFIX_BYTES, REQUEST_MESSAGE_BYTES, RESPONSE_MESSAGE_BYTES } from "./wire.ts";

const log = (line: string) => process.stderr.write(line + "\n");

type Outcome = RunOutcome<Meta, Summary, Cell>;

async function bench(opts: Options, tmp: string): Promise<Outcome> {
  const h2load = findTool("h2load");
  if (!h2load) throw new Error("h2load is not installed: apt-get install -y nghttp2-client");
  const mesh = meshCommand(opts.mesh);
  const nginx = findTool("nginx");
  const shapes = opts.shapes.map(shapeName);
  const meta: Meta = {
    date: new Date().toISOString(),
    host: { cpus: cpus().length, kernel: release(), loadAverage: loadavg() },
    mesh: mesh.describe,
    meshVersion: runMeshSync(mesh, ["version"]),
    loader: `${toolVersion([h2load, "--version"], /nghttp2\/\S+/).replace("nghttp2/", "h2load (nghttp2 ")}) -t 1 · POST ${METHOD_PATH}, ${PREFIX_BYTES + REQUEST_MESSAGE_BYTES}-byte body (one ${REQUEST_MESSAGE_BYTES}-byte message) · :authority ${AUTHORITY}`,
    nginx: nginx ? toolVersion([nginx, "-v"], /nginx\/\S+/) : null,
    service: `bench/grpc/service.ts, node:http2 h2c on bun ${Bun.version}: one ${RESPONSE_MESSAGE_BYTES}-byte message, trailers grpc-status 0`,
    quick: opts.quick,
    rounds: opts.rounds,
    durationS: opts.durationS,
    warmupS: opts.warmupS,
    primeS: opts.primeS,
    shapes,
  };
  log(`mesh: ${meta.mesh}; load: ${meta.loader}`);

  const bodyFile = join(tmp, "request.bin");
  writeFileSync(bodyFile, grpcMessage(REQUEST_MESSAGE_BYTES, "y"));
  const certs = issueCerts(mesh, join(tmp, "certs"), ["orders", "payments"]);
  log("starting topologies:");
  const { setups, seen } = await startTopologies(opts.only, { tmp, mesh, certs: { orders: certs.orders!, payments: certs.payments! } }, log);
  let live: GrpcTopology[] = setups.flatMap((s) => (s.ok ? [s.topology] : []));
  const failures = new Map<TopologyId, string>();
  const fail = (t: GrpcTopology, why: string) => {
    if (isClosing()) return; // interrupted: the failure is ours, not the topology's
    failures.set(t.id, why);
    live = live.filter((x) => x !== t);
    log(`  ${t.id} failed: ${why.split("\n")[0]}`);
  };

  if (opts.primeS > 0) {
    // Without it the first round measures mesh half-compiled: at one stream a cold pair ran
    // at a third of its rate, and took ~10 s of load to reach it (the JIT tiers up by use).
    const largest = opts.shapes.reduce((a, b) => (b.connections * b.streams > a.connections * a.streams ? b : a));
    log(`priming: ${opts.primeS} s each at ${shapeName(largest)}, not measured`);
    for (const t of [...live]) {
      try {
        const { result } = await runH2load(h2load, { port: t.port, shape: largest, durationS: opts.primeS, warmupS: 0, bodyFile }, { start() {}, end() {} });
        if (result.succeeded === 0) fail(t, `no call succeeded while priming at ${shapeName(largest)}`);
      } catch (err) {
        fail(t, (err as Error).message);
      }
    }
  }

  const cells: Cell[] = [];
  const total = opts.rounds * opts.shapes.length * live.length;
  for (let round = 0; round < opts.rounds; round++) {
    for (const [i, shape] of opts.shapes.entries()) {
      for (const t of passOrder(live, round * opts.shapes.length + i)) {
        if (isClosing()) throw new Error("interrupted");
        if (!live.includes(t)) continue;
        try {
          const cell = await measure(h2load, t, shape, { durationS: opts.durationS, warmupS: opts.warmupS }, bodyFile, round);
          cells.push(cell);
          log(`  [${cells.length}/${total}] round ${round + 1} ${cell.shape} ${t.id}: ${int(cell.load.reqPerSec)} req/s, mean ${cell.load.meanMs.toFixed(2)} ms${cell.errors ? `, ${cell.errors} errors` : ""}`);
          if (cell.load.succeeded === 0) fail(t, `no call succeeded at ${cell.shape}`);
        } catch (err) {
          fail(t, (err as Error).message);
        }
      }
    }
  }
  return { meta, summaries: summarize(setups, cells, failures, shapes, seen), cells };
}

async function main(): Promise<number> {
  const opts = readOptions<Options>(parseOptions, USAGE, log);
  if (typeof opts === "number") return opts;
  const { result, cleanup } = await measureWithCleanup("grpc", (tmp) => bench(opts, tmp));
  const ratioList = ratios(result.cells, result.summaries, result.meta.shapes);
  return finishRun(result, ratioList, render(result.meta, result.summaries, ratioList, cleanup), opts.json, log);
}

process.exit(await main());
