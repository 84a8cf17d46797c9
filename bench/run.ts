/**
 * `npm run bench`: direct, one proxy and a sidecar pair, for mesh, nginx and haproxy,
 * measured side by side in one run. Cells are interleaved (round after round, the order
 * rotated each time) so a noisy neighbour on this shared machine hits every topology
 * alike; ratios are reported next to absolute numbers for the same reason.
 * Every process started is stopped by pid: at the end, on error and on Ctrl-C.
 */
import { mkdtempSync, writeFileSync } from "node:fs";
import { cpus, loadavg, release, tmpdir } from "node:os";
import { join } from "node:path";
import { parseOptions, USAGE, type Options } from "./args.ts";
import { startService } from "./backend.ts";
import { ratios, targets } from "./compare.ts";
import { pickLoader, runLoad } from "./driver.ts";
import { findTool, toolVersion } from "./external.ts";
import { measure, type Cell } from "./measure.ts";
import { meshCommand, runMeshSync } from "./mesh-command.ts";
import { issueCerts } from "./pki.ts";
import { isClosing, readOptions, stopAndReport, stopOnSignals, survivors } from "./procs.ts";
import { render, type Meta } from "./report.ts";
import { summarize, type Summary } from "./results.ts";
import { startTopologies } from "./setup.ts";
import { proxyMemoryMb, type Topology } from "./topology.ts";
import { int } from "./format.ts";

const log = (line: string) => process.stderr.write(line + "\n");

interface Outcome {
  meta: Meta;
  summaries: Summary[];
  cells: Cell[];
}

async function bench(opts: Options, tmp: string): Promise<Outcome> {
  const mesh = meshCommand(opts.mesh);
  const loader = pickLoader(opts.loader, opts.post, tmp);
  const nginx = findTool("nginx");
  const haproxy = findTool("haproxy");
  const meta: Meta = {
    date: new Date().toISOString(),
    host: { cpus: cpus().length, kernel: release(), loadAverage: loadavg() },
    mesh: mesh.describe,
    meshVersion: runMeshSync(mesh, ["version"]),
    loader: loader.describe,
    nginx: nginx ? toolVersion([nginx, "-v"], /nginx\/\S+/) : null,
    haproxy: haproxy ? toolVersion([haproxy, "-v"], /HAProxy version \S+/) : null,
    quick: opts.quick,
    rounds: opts.rounds,
    durationS: opts.durationS,
    warmupS: opts.warmupS,
    connections: opts.connections,
  };
  log(`mesh: ${meta.mesh}; load: ${meta.loader}`);

  const certs = issueCerts(mesh, join(tmp, "certs"), ["orders", "payments"]);
  const service = await startService();
  log("starting topologies:");
  const setups = await startTopologies(opts.only, mesh, { tmp, servicePort: service.port, certs: { orders: certs.orders!, payments: certs.payments! } }, log);
  let live: Topology[] = setups.flatMap((s) => (s.ok ? [s.topology] : []));
  const idle = new Map(live.map((t) => [t.id, Object.fromEntries(t.proxies.map((p) => [p.label, proxyMemoryMb(p).rss]))]));
  const failures = new Map<string, string>();
  const fail = (t: Topology, err: unknown) => {
    if (isClosing()) return; // interrupted: the failure is ours, not the topology's
    failures.set(t.id, (err as Error).message);
    live = live.filter((x) => x !== t);
    log(`  ${t.id} failed: ${(err as Error).message.split("\n")[0]}`);
  };

  if (opts.warmupS > 0) {
    log(`warm-up: ${opts.warmupS} s each at ${Math.max(...opts.connections)} connections`);
    for (const t of [...live]) await runLoad(loader, t.url, Math.max(...opts.connections), opts.warmupS).catch((err) => fail(t, err));
  }

  const cells: Cell[] = [];
  const total = opts.rounds * opts.connections.length * live.length;
  for (let round = 0; round < opts.rounds; round++) {
    for (const [i, connections] of opts.connections.entries()) {
      for (const t of passOrder(live, round * opts.connections.length + i)) {
        if (isClosing()) throw new Error("interrupted");
        if (!live.includes(t)) continue;
        try {
          const cell = await measure(t, loader, connections, opts.durationS, round);
          cells.push(cell);
          const bad = cell.load.errors + cell.load.non2xx;
          log(`  [${cells.length}/${total}] round ${round + 1} c=${connections} ${t.id}: ${int(cell.load.reqPerSec)} req/s${bad ? `, ${bad} errors` : ""}`);
          if (cell.load.requests === 0) fail(t, new Error(`no request completed at ${connections} connections`));
        } catch (err) {
          fail(t, err);
        }
      }
    }
  }
  return { meta, summaries: summarize(setups, cells, failures, opts.connections, idle), cells };
}

/**
 * The order of one pass: rotated, and reversed every other pass, so across rounds no
 * topology always runs first, last, or right after the same neighbour.
 */
function passOrder<T>(items: T[], pass: number): T[] {
  const shift = pass % Math.max(1, items.length);
  const rotated = [...items.slice(shift), ...items.slice(0, shift)];
  return pass % 2 ? rotated.reverse() : rotated;
}

const cleanup = stopAndReport;

async function main(): Promise<number> {
  const opts = readOptions<Options>(parseOptions, USAGE, log);
  if (typeof opts === "number") return opts;
  const tmp = mkdtempSync(join(tmpdir(), "mesh-bench-"));
  stopOnSignals(() => cleanup(tmp), log);

  let outcome: Outcome | undefined;
  try {
    outcome = await bench(opts, tmp);
  } catch (err) {
    if (!isClosing()) log(`bench failed: ${(err as Error).stack ?? err}`);
  }
  const cleanupText = await cleanup(tmp);
  if (!outcome) {
    log(cleanupText);
    return 1;
  }
  const { meta, summaries, cells } = outcome;
  const ratioList = ratios(summaries);
  const targetList = targets(summaries, opts.connections);
  console.log(render(meta, summaries, ratioList, targetList, cleanupText));
  if (opts.json) writeFileSync(opts.json, JSON.stringify({ meta, topologies: summaries, ratios: ratioList, targets: targetList, cells, cleanup: survivors() }, null, 2) + "\n");

  // Smoke-test verdict: every topology that could run served every request. Timings never fail the run.
  const broken = summaries.filter((s) => s.status === "failed" || (s.status === "ok" && s.levels.some((l) => l.errors + l.non2xx > 0)));
  if (broken.length) log(`FAILED: ${broken.map((s) => s.id).join(", ")}`);
  return broken.length || survivors().alive.length ? 1 : 0;
}

process.exit(await main());
