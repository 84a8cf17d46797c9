/**
 * `npm run bench:profile`: where one mesh hop's CPU goes, by JavaScript function.
 *
 * Builds mesh without bytecode and with identifiers kept (from bytecode, class methods
 * are named "<name not materialized>"), runs one plain hop under `perf record -g` with
 * JavaScriptCore writing a JITDump, drives it with wrk, and names each sample's JIT code
 * from the dump (jitdump.ts; `perf inject --jit` does not recognize JSC's dump file name).
 * Native samples are charged to the first JavaScript function up their call chain
 * (attribute.ts). Needs perf and wrk; perf must be allowed to sample (perf_event_paranoid).
 */
import { mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { whole } from "../args.ts";
import pkg from "../../package.json" with { type: "json" };
import { startService } from "../backend.ts";
import { SERVICE_HOST } from "../check.ts";
import { findTool } from "../external.ts";
import { REPO_ROOT } from "../mesh-command.ts";
import { serviceManifest } from "../mesh.ts";
import { issueCerts } from "../pki.ts";
import { measureWithCleanup, readOptions, runToEnd, spawn, stopChild, trackDescendant, waitForLine } from "../procs.ts";
import { wrkArgs } from "../wrk.ts";
import { attribute, renderAttribution } from "./attribute.ts";
import { readJitDump } from "./jitdump.ts";

const USAGE = `usage: npm run bench:profile -- [options]

  --connections N   wrk connections (default 32)
  --duration S      seconds of load while perf samples (default 6)
  --top N           functions listed per table (default 25)
`;

interface Options {
  connections: number;
  durationS: number;
  top: number;
}

function parse(argv: string[]): Options | "help" {
  const { values } = parseArgs({
    args: argv,
    options: { connections: { type: "string", default: "32" }, duration: { type: "string", default: "6" }, top: { type: "string", default: "25" }, help: { type: "boolean" } },
  });
  if (values.help) return "help";
  return { connections: whole(values.connections, "--connections", 1), durationS: whole(values.duration, "--duration", 1), top: whole(values.top, "--top", 1) };
}

async function buildProfilingBinary(outfile: string): Promise<void> {
  const result = await Bun.build({
    entrypoints: [join(REPO_ROOT, "src", "main.ts")],
    compile: { outfile },
    bytecode: false,
    format: "esm",
    minify: { whitespace: true, syntax: true, identifiers: false },
    define: { MESH_VERSION: JSON.stringify(pkg.version), MESH_COMMIT: JSON.stringify("profile") },
  });
  if (!result.success) throw new Error(`could not build the profiling binary: ${result.logs.map(String).join("; ")}`);
}

/** The largest dump: the sidecar re-executes itself once, and the tuned process writes the one that matters. */
function largestDump(dir: string): string {
  const files = readdirSync(dir).filter((f) => f.endsWith(".dump")).map((f) => join(dir, f));
  if (files.length === 0) throw new Error(`JavaScriptCore wrote no JITDump in ${dir}`);
  return files.sort((a, b) => statSync(b).size - statSync(a).size)[0]!;
}

async function profile(opts: Options, tmp: string, perf: string, wrk: string): Promise<string> {
  const binary = join(tmp, "mesh-profile");
  await buildProfilingBinary(binary);
  const certs = issueCerts({ argv: [binary], describe: "profiling binary" }, tmp, ["orders"]);
  const service = await startService();
  const config = join(tmp, "one.yaml");
  writeFileSync(config, serviceManifest(service.port, false));
  const jitDir = join(tmp, "jit");
  mkdirSync(jitDir); // JavaScriptCore aborts at start if the dump directory is missing
  const perfData = join(tmp, "perf.data");
  const recorder = spawn("perf record", [
    perf, "record", "-q", "-k", "mono", "-g", "-e", "cpu-clock", "-F", "2999", "-o", perfData, "--",
    "env", "BUN_JSC_useJITDump=1", `BUN_JSC_jitDumpDirectory=${jitDir}`, binary,
    "proxy", "--service", "orders", "--upstream", `http://127.0.0.1:${service.port}`, "--certs-dir", certs.orders!, "--config", config,
    "--inbound", "127.0.0.1:0", "--outbound", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--log-level", "warn",
  ]);
  const ready = JSON.parse(await waitForLine(recorder, (l) => l.includes('"ready":true'), 30_000)) as { outbound: number };
  // The proxy is perf's child: recorded, so it is stopped by pid whatever happens.
  const proxyPid = Number(readFileSync(`/proc/${recorder.pid}/task/${recorder.pid}/children`, "utf8").trim().split(/\s+/)[0]);
  trackDescendant(proxyPid);
  const load = spawn("wrk", wrkArgs(wrk, `http://127.0.0.1:${ready.outbound}/`, SERVICE_HOST, opts.connections, opts.durationS));
  await runToEnd(load, (opts.durationS + 20) * 1000);
  const rate = /Requests\/sec:\s*([\d.]+)/.exec(load.stdout())?.[1] ?? "?";
  // The proxy drains and exits; perf then writes its data and exits too.
  process.kill(proxyPid, "SIGTERM");
  await runToEnd(recorder, 30_000);
  await stopChild(service.child);
  const script = Bun.spawnSync([perf, "script", "-i", perfData, "-F", "ip,sym,dso"], { stdout: "pipe", stderr: "pipe", maxBuffer: 1 << 30 });
  if (script.exitCode !== 0) throw new Error(`perf script failed: ${script.stderr.toString().trim()}`);
  const regions = readJitDump(new Uint8Array(readFileSync(largestDump(jitDir))));
  const table = renderAttribution(attribute(script.stdout.toString(), regions), opts.top);
  return `one mesh hop, ${opts.connections} connections, ${opts.durationS} s: ${rate} req/s under perf\n\n${table}`;
}

const opts = readOptions(parse, USAGE, (line) => console.error(line));
if (typeof opts === "number") process.exit(opts);
const perf = findTool("perf");
const wrk = findTool("wrk");
if (!perf || !wrk) {
  console.error(`bench:profile needs ${[!perf && "perf", !wrk && "wrk"].filter(Boolean).join(" and ")} (Debian: apt-get install -y linux-perf wrk)`);
  process.exit(1);
}
const { result: report, cleanup } = await measureWithCleanup("profile", (tmp) => profile(opts, tmp, perf, wrk));
console.log(`${report}\n\n${cleanup}`);
