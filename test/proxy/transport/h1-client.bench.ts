/**
 * Micro-benchmark: requests per second of the raw-socket Http1Pool against Bun's fetch
 * with a pooled FetchSession, on loopback, plain and mTLS (with the SPIFFE check once per
 * connection in both). The server runs in its own process so the numbers are the
 * client's cost, as req/s and as client CPU per request (the cost of a proxy hop when
 * cores are shared); then a proxy hop driven by wrk (relay in this process), if wrk is
 * installed. Bounded in time: about 40 x seconds.
 *
 *   node_modules/.bin/bun test/proxy/transport/h1-client.bench.ts [seconds=3] [concurrency=32]
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

if (process.argv[2] === "--server") {
  // Server process: one Bun.serve, plain or mTLS, bodies of the requested size.
  const [, , , mode, dir] = process.argv;
  const bodies = new Map<number, Uint8Array<ArrayBuffer>>();
  const body = (n: number) => bodies.get(n) ?? (bodies.set(n, new Uint8Array(n).fill(120)), bodies.get(n)!);
  const tls =
    mode === "mtls"
      ? { cert: readFileSync(join(dir!, "server.pem"), "utf8"), key: readFileSync(join(dir!, "server.key"), "utf8"), ca: readFileSync(join(dir!, "ca.pem"), "utf8"), requestCert: true, rejectUnauthorized: true }
      : undefined;
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    ...(tls ? { tls } : {}),
    fetch: (req) => new Response(body(Number(new URL(req.url).searchParams.get("size") ?? 100))),
  });
  console.log(server.port);
  // Exit with the parent.
  for await (const _ of Bun.stdin.stream()) void _;
  process.exit(0);
}

const { Http1Pool } = await import("../../../src/proxy/transport/h1/index.ts");
const { peerIdFromDer } = await import("../../../src/proxy/peer-identity.ts");
const { makeIntermediate, makeLeaf, makeRoot, pemOf } = await import("../../helpers/certs.ts");

const seconds = Number(process.argv[2] ?? 3);
const concurrency = Number(process.argv[3] ?? 32);
const SERVER_ID = "spiffe://bench.local/ns/default/sa/server";

const root = await makeRoot({ trustDomain: "bench.local" });
const int = await makeIntermediate(root);
const serverLeaf = await makeLeaf(int, { uris: [SERVER_ID] });
const clientLeaf = await makeLeaf(int, { uris: ["spiffe://bench.local/ns/default/sa/client"] });
const dir = mkdtempSync(join(tmpdir(), "h1-bench-"));
writeFileSync(join(dir, "server.pem"), pemOf(serverLeaf, int));
writeFileSync(join(dir, "server.key"), serverLeaf.keyPem);
writeFileSync(join(dir, "ca.pem"), root.pem);

const verifyDer = (der: Uint8Array<ArrayBuffer>): Error | undefined => {
  const id = peerIdFromDer(der, "bench.local");
  return id.ok && id.spiffeId === SERVER_ID ? undefined : new Error("wrong peer");
};
const clientTls = { cert: pemOf(clientLeaf, int), key: clientLeaf.keyPem, ca: root.pem };

async function startServer(mode: "plain" | "mtls") {
  const proc = Bun.spawn([process.execPath, import.meta.path, "--server", mode, dir], { stdin: "pipe", stdout: "pipe", stderr: "inherit" });
  const reader = proc.stdout.getReader();
  let text = "";
  while (!text.includes("\n")) text += new TextDecoder().decode((await reader.read()).value);
  return { port: Number(text.trim()), stop: () => proc.kill() };
}

type Send = (size: number) => Promise<Response>;

interface Result {
  rps: number;
  /** Client process CPU (user + system, all threads: fetch has its own HTTP thread) per request. */
  cpuUs: number;
}

async function run(send: Send, size: number): Promise<Result> {
  let stop = false;
  let count = 0;
  let measuring = false;
  const worker = async () => {
    while (!stop) {
      const res = await send(size);
      await res.arrayBuffer();
      if (measuring) count++;
    }
  };
  const workers = Array.from({ length: concurrency }, worker);
  await Bun.sleep(300); // warm-up: connections, JIT
  measuring = true;
  const started = performance.now();
  const cpu0 = process.cpuUsage();
  await Bun.sleep(seconds * 1000);
  measuring = false;
  const cpu = process.cpuUsage(cpu0);
  const elapsed = (performance.now() - started) / 1000;
  stop = true;
  await Promise.all(workers);
  return { rps: count / elapsed, cpuUs: (cpu.user + cpu.system) / count };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const ROUNDS = 3;

console.log(`concurrency ${concurrency}, ${ROUNDS} alternating rounds of ${seconds} s per client, medians; Bun ${Bun.version}`);
for (const mode of ["plain", "mtls"] as const) {
  const server = await startServer(mode);
  const scheme = mode === "mtls" ? "https" : "http";
  try {
    for (const size of [100, 64 * 1024]) {
      const pool = new Http1Pool({
        host: "127.0.0.1",
        port: server.port,
        connectTimeoutMs: 2000,
        idleTimeoutMs: 30_000,
        ...(mode === "mtls" ? { tls: { ...clientTls, verifyPeer: verifyDer } } : {}),
      });
      const headers = new Headers();
      const h1: Send = (n) => pool.send({ method: "GET", pathAndQuery: `/?size=${n}`, headers, body: null });
      const session = new Bun.FetchSession({
        keepAlive: { idleTimeout: 60 },
        ...(mode === "mtls"
          ? { tls: { ...clientTls, rejectUnauthorized: true, checkServerIdentity: ((_h: string, cert: { raw: Uint8Array }) => verifyDer(new Uint8Array(cert.raw))) as never } }
          : {}),
      });
      const viaFetch: Send = (n) => session.fetch(`${scheme}://127.0.0.1:${server.port}/?size=${n}`, { decompress: false });
      const a: Result[] = [];
      const b: Result[] = [];
      for (let round = 0; round < ROUNDS; round++) {
        a.push(await run(h1, size));
        b.push(await run(viaFetch, size));
      }
      const ar = median(a.map((r) => r.rps));
      const br = median(b.map((r) => r.rps));
      const ac = median(a.map((r) => r.cpuUs));
      const bc = median(b.map((r) => r.cpuUs));
      console.log(
        `${mode.padEnd(5)} ${String(size).padStart(6)} B | Http1Pool ${ar.toFixed(0).padStart(6)} req/s ${ac.toFixed(1).padStart(5)} us CPU/req | ` +
          `FetchSession ${br.toFixed(0).padStart(6)} req/s ${bc.toFixed(1).padStart(5)} us CPU/req | req/s ratio ${(ar / br).toFixed(2)}, CPU/req ratio ${(ac / bc).toFixed(2)} ` +
          `(connections ${pool.stats.created}, handshakes ${pool.stats.handshakes})`,
      );
      pool.close();
      session.close();
    }
  } finally {
    server.stop();
  }
}
// A proxy hop, the way the outbound side uses the client: wrk -> Bun.serve relay (this
// process) -> upstream. Needs wrk on PATH; skipped otherwise.
if (Bun.which("wrk")) {
  console.log(`\nproxy hop: wrk -t1 -c${concurrency} -> Bun.serve relay -> upstream (100 B); relay process CPU per request`);
  for (const mode of ["plain", "mtls"] as const) {
    const server = await startServer(mode);
    const scheme = mode === "mtls" ? "https" : "http";
    const pool = new Http1Pool({
      host: "127.0.0.1",
      port: server.port,
      connectTimeoutMs: 2000,
      idleTimeoutMs: 30_000,
      ...(mode === "mtls" ? { tls: { ...clientTls, verifyPeer: verifyDer } } : {}),
    });
    const session = new Bun.FetchSession({
      keepAlive: { idleTimeout: 60 },
      ...(mode === "mtls"
        ? { tls: { ...clientTls, rejectUnauthorized: true, checkServerIdentity: ((_h: string, cert: { raw: Uint8Array }) => verifyDer(new Uint8Array(cert.raw))) as never } }
        : {}),
    });
    const relays = {
      Http1Pool: async (req: Request) => {
        const url = new URL(req.url);
        const res = await pool.send({ method: req.method, pathAndQuery: url.pathname + url.search, headers: req.headers, body: req.body });
        return new Response(res.body, { status: res.status, headers: res.headers });
      },
      FetchSession: async (req: Request) => {
        const url = new URL(req.url);
        const res = await session.fetch(`${scheme}://127.0.0.1:${server.port}${url.pathname}${url.search}`, { method: req.method, headers: req.headers, body: req.body, decompress: false });
        return new Response(res.body, { status: res.status, headers: res.headers });
      },
    };
    const hop: Record<string, Result[]> = { Http1Pool: [], FetchSession: [] };
    try {
      for (let round = 0; round < ROUNDS; round++) {
        for (const name of ["Http1Pool", "FetchSession"] as const) {
          const relay = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: relays[name] });
          const url = `http://127.0.0.1:${relay.port}/?size=100`;
          await Bun.spawn(["wrk", "-t1", "-c4", "-d1s", url], { stdout: "ignore" }).exited; // warm-up
          const cpu0 = process.cpuUsage();
          const wrk = Bun.spawn(["wrk", "-t1", `-c${concurrency}`, `-d${seconds}s`, url], { stdout: "pipe" });
          const out = await new Response(wrk.stdout).text();
          const cpu = process.cpuUsage(cpu0);
          const m = /(\d+) requests in ([\d.]+)s/.exec(out);
          const requests = Number(m?.[1] ?? 0);
          if (!m || /Non-2xx|Socket errors/.test(out)) console.log(`  (${name}: wrk reported problems)\n${out}`);
          hop[name]!.push({ rps: requests / Number(m?.[2] ?? seconds), cpuUs: (cpu.user + cpu.system) / Math.max(1, requests) });
          relay.stop(true);
        }
      }
    } finally {
      pool.close();
      session.close();
      server.stop();
    }
    const [a, b] = [hop.Http1Pool!, hop.FetchSession!];
    const ar = median(a.map((r) => r.rps));
    const br = median(b.map((r) => r.rps));
    const ac = median(a.map((r) => r.cpuUs));
    const bc = median(b.map((r) => r.cpuUs));
    console.log(
      `${mode.padEnd(5)} hop | Http1Pool ${ar.toFixed(0).padStart(6)} req/s ${ac.toFixed(1).padStart(5)} us CPU/req | FetchSession ${br.toFixed(0).padStart(6)} req/s ${bc.toFixed(1).padStart(5)} us CPU/req | req/s ratio ${(ar / br).toFixed(2)}, CPU/req ratio ${(ac / bc).toFixed(2)}`,
    );
  }
}
rmSync(dir, { recursive: true, force: true });
