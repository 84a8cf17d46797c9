/**
 * `npm run bench:idle`: what an idle keep-alive connection costs a sidecar in resident
 * memory. One proxy (dist/mesh when built) in front of the bench's service: N plain
 * connections to its outbound listener and N mutual-TLS ones to its inbound, each
 * having carried one request and then left idle. VmRSS before and after each set,
 * divided by N. It measures growth, so a set reuses what the runtime already had: each
 * figure is a floor for that set, not a sum.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import type { Socket } from "bun";
import { whole } from "../args.ts";
import { startService } from "../backend.ts";
import { SERVICE_HOST } from "../check.ts";
import { meshCommand } from "../mesh-command.ts";
import { serviceManifest } from "../mesh.ts";
import { issueCerts } from "../pki.ts";
import { measureWithCleanup, readOptions, spawn, waitForLine } from "../procs.ts";

const USAGE = `usage: npm run bench:idle -- [options]

  --connections N   idle connections in each set (default 2000)
  --mesh PATH       a mesh binary, or "source" (default: dist/mesh when built)
`;

interface Options {
  connections: number;
  mesh: string | undefined;
}

function parse(argv: string[]): Options | "help" {
  const { values } = parseArgs({ args: argv, options: { connections: { type: "string", default: "2000" }, mesh: { type: "string" }, help: { type: "boolean" } } });
  if (values.help) return "help";
  return { connections: whole(values.connections, "--connections", 1), mesh: values.mesh };
}

const rssKb = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))![1]);

interface TlsFiles {
  cert: string;
  key: string;
  ca: string;
}

/** One connection that carries one GET and stays open; resolves once the response began. */
async function idleConnection(port: number, tls: TlsFiles | undefined): Promise<Socket<undefined>> {
  let answered!: () => void;
  let failed!: (err: Error) => void;
  const done = new Promise<void>((resolve, reject) => ((answered = resolve), (failed = reject)));
  const request = `GET / HTTP/1.1\r\nHost: ${SERVICE_HOST}\r\n\r\n`;
  const socket = await Bun.connect({
    hostname: "127.0.0.1",
    port,
    // The chain is verified by the listener; the client does not check the server's name (a SPIFFE ID).
    tls: tls ? { ...tls, rejectUnauthorized: false } : undefined,
    socket: {
      // Bun drops what a TLS client writes before its handshake completes.
      handshake: (s) => void s.write(request),
      data: () => answered(),
      close: () => failed(new Error(`connection to ${port} closed before its response`)),
    },
  });
  if (!tls) socket.write(request);
  await done;
  return socket;
}

async function measureSet(label: string, pid: number, n: number, open: () => Promise<Socket<undefined>>): Promise<string> {
  const before = rssKb(pid);
  const sockets: Socket<undefined>[] = [];
  for (let i = 0; i < n; i++) sockets.push(await open());
  await Bun.sleep(1000);
  const after = rssKb(pid);
  for (const s of sockets) s.end();
  await Bun.sleep(500);
  return `${label.padEnd(34)} ${String(before).padStart(7)} → ${String(after).padStart(7)} KB   ${(((after - before) * 1024) / n / 1024).toFixed(1).padStart(5)} KB each`;
}

async function run(opts: Options, tmp: string): Promise<string[]> {
  const mesh = meshCommand(opts.mesh);
  const certs = issueCerts(mesh, tmp, ["orders", "payments"]);
  const service = await startService();
  const config = join(tmp, "payments.yaml");
  writeFileSync(config, serviceManifest(service.port, false));
  const proxy = spawn("proxy", [
    ...mesh.argv, "proxy", "--service", "orders", "--upstream", `http://127.0.0.1:${service.port}`, "--certs-dir", certs.orders!, "--config", config,
    "--inbound", "127.0.0.1:0", "--outbound", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--log-level", "warn",
    // Above the default for any machine this runs on: the bench measures memory, not the limit.
    "--max-connections", String(opts.connections * 2 + 100),
  ]);
  const ports = JSON.parse(await waitForLine(proxy, (l) => l.includes('"ready":true'), 20_000)) as { inbound: number; outbound: number };
  await Bun.sleep(500);
  const dir = certs.payments!;
  const tls = { cert: readFileSync(join(dir, "chain.pem"), "utf8"), key: readFileSync(join(dir, "key.pem"), "utf8"), ca: readFileSync(join(dir, "bundle.pem"), "utf8") };
  return [
    `mesh: ${mesh.describe}; ${opts.connections} connections per set, each idle after one GET`,
    await measureSet("plain, outbound listener", proxy.pid, opts.connections, () => idleConnection(ports.outbound, undefined)),
    await measureSet("mutual TLS, inbound listener", proxy.pid, opts.connections, () => idleConnection(ports.inbound, tls)),
  ];
}

const opts = readOptions(parse, USAGE, (line) => console.error(line));
if (typeof opts === "number") process.exit(opts);
const { result: lines, cleanup } = await measureWithCleanup("idle", (tmp) => run(opts, tmp));
console.log(`resident memory per idle keep-alive connection (VmRSS growth / N)\n\n${lines.join("\n")}\n\n${cleanup}`);
