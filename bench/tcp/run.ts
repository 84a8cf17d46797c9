/**
 * `npm run bench:tcp`: opaque TCP through the mesh sidecar pair (mesh-tcp/1 over mTLS),
 * against a direct connection and a haproxy pair (mode tcp, mTLS), side by side in one
 * run: round trips on persistent connections and bulk throughput. Cells are interleaved
 * (round after round, the order rotated each pass) so a noisy neighbour on this shared
 * machine hits every topology alike; ratios are taken within each round for the same
 * reason. Every process started is stopped by pid: at the end, on error and on Ctrl-C.
 */
import { cpus, loadavg, release } from "node:os";
import { join } from "node:path";
import { findTool, toolVersion } from "../external.ts";
import { int } from "../format.ts";
import { passOrder } from "../grpc/schedule.ts";
import { meshCommand, runMeshSync } from "../mesh-command.ts";
import { issueCerts } from "../pki.ts";
import { isClosing, measureWithCleanup, readOptions } from "../procs.ts";
import { finishRun, type RunOutcome } from "../finish-run.ts";
import { parseOptions, USAGE, type Options } from "./args.ts";
import { loadName, runClient, type Load } from "./load.ts";
import { measure, type Cell } from "./measure.ts";
import { render, type Meta } from "./report.ts";
import { ratios, summarize, type Summary } from "./results.ts";
import { startTopologies } from "./setup.ts";
import { goneFrom, type TcpTopology, type TopologyId } from "./topology.ts";
import { MESSAGE_BYTES } from "./wire.ts";

const log = (line: string) => process.stderr.write(line + "\n");

type Outcome = RunOutcome<Meta, Summary, Cell>;

function describe(cell: Cell): string {
  const c = cell.client;
  const rate = c.kind === "rr" ? `${int(c.perSecond)} round trips/s, p50 ${int(c.p50Us)} µs, p99 ${int(c.p99Us)} µs` : `${int(c.mbPerSec)} MB/s over ${c.transfers} transfers`;
  return `${rate}${cell.errors ? `, ${cell.errors} errors` : ""}`;
}

async function bench(opts: Options, tmp: string): Promise<Outcome> {
  const mesh = meshCommand(opts.mesh);
  const haproxy = findTool("haproxy");
  const loads = opts.loads.map(loadName);
  const meta: Meta = {
    date: new Date().toISOString(),
    host: { cpus: cpus().length, kernel: release(), loadAverage: loadavg() },
    mesh: mesh.describe,
    meshVersion: runMeshSync(mesh, ["version"]),
    haproxy: haproxy ? toolVersion([haproxy, "-v"], /HAProxy version \S+/) : null,
    loader: `bench/tcp/client.ts on bun ${Bun.version}, its own process, one thread: ${MESSAGE_BYTES}-byte round trips on ${opts.loads.flatMap((l) => (l.kind === "rr" ? [l.connections] : [])).join(" and ")} persistent connection(s); bulk transfers checked byte for byte`,
    echo: `bench/tcp/echo.ts, Bun.listen on bun ${Bun.version}: echoes every byte with backpressure, FIN after the client's`,
    quick: opts.quick,
    rounds: opts.rounds,
    durationS: opts.durationS,
    warmupS: opts.warmupS,
    primeS: opts.primeS,
    loads,
  };
  log(`mesh: ${meta.mesh} (${meta.meshVersion}); haproxy: ${meta.haproxy ?? "not installed"}`);

  const certs = issueCerts(mesh, join(tmp, "certs"), ["orders", "payments"]);
  log("starting topologies:");
  const setups = await startTopologies(opts.only, { tmp, mesh, certs: { orders: certs.orders!, payments: certs.payments! } }, log);
  let live: TcpTopology[] = setups.flatMap((s) => (s.ok ? [s.topology] : []));
  const failures = new Map<TopologyId, string>();
  const fail = (t: TcpTopology, reason: string) => {
    if (isClosing()) return; // interrupted: the failure is ours, not the topology's
    // A process that died explains the rest (a refused connection, a metrics fetch that failed).
    const dead = goneFrom(t);
    const why = dead ? `${dead}; then: ${reason}` : reason;
    failures.set(t.id, why);
    live = live.filter((x) => x !== t);
    log(`  ${t.id} failed: ${why.split("\n")[0]}`);
  };

  if (opts.primeS > 0) {
    // Without it the first round measures mesh before its JIT has compiled the relay (as bench:grpc found).
    const largest: Load = { kind: "rr", connections: Math.max(...opts.loads.map((l) => (l.kind === "rr" ? l.connections : 1))) };
    log(`priming: ${opts.primeS} s each at ${loadName(largest)}, not measured`);
    for (const t of [...live]) {
      try {
        const r = await runClient(t.port, largest, { warmupS: 0, durationS: opts.primeS }, { start() {}, end() {} });
        if (r.errors > 0) fail(t, `errors while priming: ${r.errorSample.join("; ")}`);
      } catch (err) {
        fail(t, (err as Error).message);
      }
    }
  }

  const cells: Cell[] = [];
  const total = opts.rounds * opts.loads.length * live.length;
  for (let round = 0; round < opts.rounds; round++) {
    for (const [i, load] of opts.loads.entries()) {
      for (const t of passOrder(live, round * opts.loads.length + i)) {
        if (isClosing()) throw new Error("interrupted");
        if (!live.includes(t)) continue;
        try {
          const cell = await measure(t, load, { durationS: opts.durationS, warmupS: opts.warmupS }, round);
          cells.push(cell);
          log(`  [${cells.length}/${total}] round ${round + 1} ${cell.load} ${t.id}: ${describe(cell)}`);
          if (cell.errors > 0) log(`    ${[...cell.client.errorSample, cell.proxyFailed ? `proxies: ${cell.proxyFailed} not in order` : "", cell.notCarried ? `${cell.notCarried} not counted as carried` : ""].filter(Boolean).join("; ")}`);
          const nothing = cell.client.kind === "rr" ? cell.client.roundTrips === 0 : cell.client.transfers === 0;
          if (nothing) fail(t, `nothing completed at ${cell.load}: ${cell.client.errorSample.join("; ") || "no error reported"}`);
        } catch (err) {
          fail(t, (err as Error).message);
        }
      }
    }
  }
  return { meta, summaries: summarize(setups, cells, failures, loads), cells };
}

async function main(): Promise<number> {
  const opts = readOptions<Options>(parseOptions, USAGE, log);
  if (typeof opts === "number") return opts;
  const { result, cleanup } = await measureWithCleanup("tcp", (tmp) => bench(opts, tmp));
  const ratioList = ratios(result.cells, result.summaries, result.meta.loads);
  return finishRun(result, ratioList, render(result.meta, result.summaries, ratioList, cleanup), opts.json, log);
}

process.exit(await main());
