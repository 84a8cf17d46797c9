/**
 * `npm run bench:alloc`: the heap cells one request allocates in each mesh proxy, by type.
 *
 * One plain hop (client → outbound → the bench's 100-byte service), or with `--pair` the
 * sidecar pair (client → outbound → mTLS → inbound → service), run from source with
 * probe.ts preloaded and the engine told not to collect: a 2 GiB RAM size (a large
 * allocation budget), no eden timer and no Bun GC timer. After a warm-up (so the JIT has
 * settled), each proxy counts its heap cells, the pair serves N sequential requests on one
 * keep-alive connection, and each counts again (census.ts). A collection in between would
 * hide cells, so the run says so and tries again with fewer requests. Then each proxy
 * collects in full, the client sends N requests more, and each makes a young collection:
 * what that one finds still reachable is what the request path keeps (it should be
 * nearly nothing once the requests are over).
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { whole } from "../args.ts";
import { startService } from "../backend.ts";
import { SERVICE_HOST } from "../check.ts";
import { ResponseReader } from "../http1-reader.ts";
import { meshCommand } from "../mesh-command.ts";
import { serviceManifest } from "../mesh.ts";
import { issueCerts } from "../pki.ts";
import { measureWithCleanup, readOptions, spawn, waitForLine, type Child } from "../procs.ts";
import { censusOf, hasCount, keptOf, KEPT_MARK, type Census } from "./census.ts";

const USAGE = `usage: npm run bench:alloc -- [options]

  --requests N   requests between the two heap counts (default 1000)
  --warmup N     requests before counting, so the JIT has settled (default 3000)
  --pair         the sidecar pair (outbound and inbound, mTLS between) instead of one hop
`;

interface Options {
  requests: number;
  warmup: number;
  pair: boolean;
}

function parse(argv: string[]): Options | "help" {
  const { values } = parseArgs({
    args: argv,
    options: { requests: { type: "string", default: "1000" }, warmup: { type: "string", default: "3000" }, pair: { type: "boolean", default: false }, help: { type: "boolean" } },
  });
  if (values.help) return "help";
  return { requests: whole(values.requests, "--requests", 1), warmup: whole(values.warmup, "--warmup", 1), pair: values.pair };
}

/** The engine settings that hold collections off, and the marker that skips the sidecar's own re-exec. */
const HOLD_GC = ["BUN_JSC_logGC=1", `BUN_JSC_forceRAMSize=${2 * 1024 ** 3}`, "BUN_JSC_percentCPUPerMBForEdenTimer=0.001", "BUN_GC_TIMER_DISABLE=1", "MESH_RUNTIME_TUNED="];

/** Sequential GETs on one keep-alive connection. */
async function client(port: number): Promise<{ send(n: number): Promise<void>; close(): void }> {
  const request = Buffer.from(`GET / HTTP/1.1\r\nHost: ${SERVICE_HOST}\r\n\r\n`);
  const reader = new ResponseReader();
  let waiting: ((status: number) => void) | undefined;
  const socket = await Bun.connect({
    hostname: "127.0.0.1",
    port,
    socket: {
      data(_s, chunk) {
        for (const res of reader.push(chunk)) waiting?.(res.status);
      },
    },
  });
  return {
    async send(n) {
      for (let i = 0; i < n; i++) {
        const status = await new Promise<number>((resolve) => {
          waiting = resolve;
          socket.write(request);
        });
        if (status !== 200) throw new Error(`request ${i + 1} answered ${status}`);
      }
    },
    close: () => socket.end(),
  };
}

interface Proxy {
  label: string;
  child: Child;
  ports: { inbound: number; outbound: number };
  /** Heap counts asked for so far. */
  counts: number;
}

/** Asks the proxy for a heap count and waits until its line is out (numbered: only the tail of stderr is kept). */
async function count(proxy: Proxy): Promise<void> {
  const n = ++proxy.counts;
  process.kill(proxy.child.pid, "SIGUSR2");
  const until = Date.now() + 5000;
  while (!hasCount(proxy.child.stderr(), n)) {
    if (Date.now() > until) throw new Error(`${proxy.label} did not answer heap count ${n} (SIGUSR2) within 5 s`);
    await Bun.sleep(10);
  }
}

/** A sidecar from source, under the probe and with collections held off. */
async function startProxy(label: string, service: string, certs: string, upstreamPort: number, config?: string): Promise<Proxy> {
  const [bun, main] = meshCommand("source").argv as [string, string];
  const child = spawn(label, [
    "env", ...HOLD_GC, bun, "--preload", join(import.meta.dir, "probe.ts"), main,
    "proxy", "--service", service, "--upstream", `http://127.0.0.1:${upstreamPort}`, "--certs-dir", certs, ...(config ? ["--config", config] : []),
    "--inbound", "127.0.0.1:0", "--outbound", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--log-level", "warn",
  ]);
  const ports = JSON.parse(await waitForLine(child, (l) => l.includes('"ready":true'), 20_000)) as Proxy["ports"];
  return { label, child, ports, counts: 0 };
}

/** The proxies of the topology, the one the client calls first. */
async function startTopology(opts: Options, tmp: string): Promise<Proxy[]> {
  const certs = issueCerts(meshCommand("source"), tmp, ["orders", "payments"]);
  const service = await startService();
  const config = join(tmp, "payments.yaml");
  if (!opts.pair) {
    writeFileSync(config, serviceManifest(service.port, false));
    return [await startProxy("outbound", "orders", certs.orders!, service.port, config)];
  }
  const inbound = await startProxy("inbound", "payments", certs.payments!, service.port);
  writeFileSync(config, serviceManifest(inbound.ports.inbound, true));
  return [await startProxy("outbound", "orders", certs.orders!, service.port, config), inbound];
}

/** Asks the proxy for a full (`start`) or young (`end`) collection and waits for its mark (SIGWINCH, probe.ts). */
async function collect(proxy: Proxy, mark: "start" | "end"): Promise<void> {
  const before = proxy.child.stderr().split(`${KEPT_MARK}${mark}`).length;
  process.kill(proxy.child.pid, "SIGWINCH");
  const until = Date.now() + 5000;
  while (proxy.child.stderr().split(`${KEPT_MARK}${mark}`).length === before) {
    if (Date.now() > until) throw new Error(`${proxy.label} did not collect (SIGWINCH) within 5 s`);
    await Bun.sleep(10);
  }
}

interface Result {
  label: string;
  census: Census;
  requests: number;
  /** KB a young collection found reachable after `requests` more requests. */
  kept: number | undefined;
}

async function measure(opts: Options, tmp: string): Promise<Result[]> {
  const proxies = await startTopology(opts, tmp);
  const load = await client(proxies[0]!.ports.outbound);
  await load.send(opts.warmup);
  let requests = opts.requests;
  for (let attempt = 1; ; attempt++) {
    for (const p of proxies) await count(p);
    await load.send(requests);
    for (const p of proxies) await count(p);
    for (const p of proxies) await count(p);
    const results = proxies.map((p) => ({ label: p.label, census: censusOf(p.child.stderr(), requests), requests, kept: undefined }));
    if (results.every((r) => r.census.collections === 0) || attempt === 3) {
      for (const p of proxies) await collect(p, "start");
      await load.send(requests);
      for (const p of proxies) await collect(p, "end");
      load.close();
      return results.map((r, i) => ({ ...r, kept: keptOf(proxies[i]!.child.stderr()) }));
    }
    requests = Math.max(50, Math.floor(requests / 2));
  }
}

function render(r: Result): string {
  const c = r.census;
  const rows = c.perRequest.map(([type, n]) => `  ${n.toFixed(2).padStart(7)}  ${type}`);
  return [
    `${r.label}:`,
    ...rows,
    `  ${c.total.toFixed(2).padStart(7)}  all types`,
    c.collections === 0 ? "  no collection ran between the counts" : `  WARNING: ${c.collections} collection(s) ran between the counts: the figures are low`,
    `  kept by a young collection after ${r.requests} more requests: ${r.kept === undefined ? "not found in the GC log" : `${r.kept} KB`}`,
  ].join("\n");
}

const opts = readOptions(parse, USAGE, (line) => console.error(line));
if (typeof opts === "number") process.exit(opts);
const { result: results, cleanup } = await measureWithCleanup("alloc", (tmp) => measure(opts, tmp));
const what = opts.pair ? "the sidecar pair (mTLS between)" : "one mesh hop";
console.log(`heap cells allocated per request in ${what}, GET with a 100-byte response, ${results[0]!.requests} requests after ${opts.warmup} of warm-up\n`);
console.log(`${results.map(render).join("\n\n")}\n\n${cleanup}`);
process.exit(results.every((r) => r.census.collections === 0) ? 0 : 1);
