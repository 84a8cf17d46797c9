/**
 * `npm run bench:control-plane`: a real `mesh control-plane` and N simulated proxies in a
 * few simulator processes, on loopback. Measures memory per subscribed proxy, then the
 * time from applying a policy change to every proxy acknowledging it, over M rounds.
 * A benchmark, not a test: timings never fail it; a proxy that never acks does (exit 1),
 * and the report still shows what was measured before.
 * Every process started is stopped by pid: at the end, on error and on Ctrl-C.
 */
import { mkdtempSync, writeFileSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { meshCommand } from "../mesh-command.ts";
import { isClosing, readOptions, stopAndReport, stopChild, stopOnSignals, survivors } from "../procs.ts";
import { parseOptions, USAGE, type Options } from "./args.ts";
import { fleetStatus } from "./fleet.ts";
import { policyRound, subscribeAll } from "./phases.ts";
import { fdLimit } from "./resources.ts";
import { render, type Results } from "./report.ts";
import { setUp, type Setup } from "./setup.ts";

const log = (line: string) => process.stderr.write(line + "\n");

let setup: Setup | undefined;

async function bench(opts: Options, tmp: string, res: Results): Promise<void> {
  // Per mTLS connection the control plane holds 3 descriptors: the TLS socket and both ends of its loopback bridge.
  const connections = opts.clientPer === "proxy" ? 2 * opts.proxies : opts.proxies + opts.services * opts.simulators * 4;
  if (3 * connections + 256 > res.meta.fdLimit) log(`warning: the control plane may need ~${3 * connections + 256} descriptors; the open-files limit is ${res.meta.fdLimit}`);
  log(`mesh: ${res.meta.mesh}`);
  setup = await setUp(opts, meshCommand(opts.mesh), tmp, log);
  res.subscription = await subscribeAll(setup, opts.proxies, log);
  let previous = "";
  for (let r = 1; r <= opts.rounds; r++) {
    if (isClosing()) throw new Error("interrupted");
    const round = await policyRound(setup, opts, r, previous, log);
    previous = round.version;
    res.rounds.push(round);
    log(`  round ${r}: acked p50 ${Math.round(round.acked.p50)} ms, p99 ${Math.round(round.acked.p99)} ms, last ${Math.round(round.acked.max)} ms`);
  }
}

async function cleanup(tmp: string): Promise<string> {
  // Simulators first, so the control plane shuts down without a reconnect storm.
  if (setup) await Promise.all(setup.sims.map((s) => stopChild(s.child)));
  return stopAndReport(tmp);
}

async function main(): Promise<number> {
  const opts = readOptions<Options>(parseOptions, USAGE, log);
  if (typeof opts === "number") return opts;
  const tmp = mkdtempSync(join(tmpdir(), "mesh-bench-cp-"));
  stopOnSignals(() => cleanup(tmp), log);

  const res: Results = { meta: { date: new Date().toISOString(), mesh: meshCommand(opts.mesh).describe, cpus: cpus().length, fdLimit: fdLimit(), options: opts }, rounds: [] };
  try {
    await bench(opts, tmp, res);
  } catch (err) {
    // Interrupted: the signal handler is stopping everything and exits when done.
    if (isClosing()) return new Promise<number>(() => undefined);
    res.failure = (err as Error).message;
    log(`bench failed: ${(err as Error).stack ?? err}`);
    if (setup) log(`control plane stderr (tail):\n${setup.cp.child.stderr().trimEnd().split("\n").slice(-10).join("\n")}`);
  }
  if (setup) res.errors = (await fleetStatus(setup.sims, 0).catch(() => undefined))?.errors;
  const cleanupText = await cleanup(tmp);
  console.log(render(res, cleanupText));
  if (opts.json) writeFileSync(opts.json, JSON.stringify({ ...res, cleanup: survivors() }, null, 2) + "\n");
  return res.failure || survivors().alive.length ? 1 : 0;
}

process.exit(await main());
