/** `mesh run`: a service and its sidecar as one unit, with real processes on loopback. */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { mesh } from "../helpers/cli.ts";
import { MeshFixture } from "../helpers/mesh-fixture.ts";
import { pidAlive, startMesh } from "../helpers/procs.ts";
import { steadyTraffic } from "../helpers/traffic.ts";
import { freePort } from "../helpers/ports.ts";
import { greeterService } from "../helpers/grpc.ts";
import { tcpEchoService } from "../helpers/tcp.ts";
import { writeFileSync } from "node:fs";

const MAIN = join(import.meta.dir, "..", "..", "src", "main.ts");
const SERVICE = join(import.meta.dir, "..", "helpers", "mesh-run-service.ts");
const GRPC_CALL = join(import.meta.dir, "..", "helpers", "grpc-call.ts");
const ORDERS_ID = "spiffe://mesh.local/ns/default/sa/orders";

const fx = new MeshFixture();
const started: Subprocess[] = [];
const callers: (string | null)[] = [];
let paymentsInbound = 0;

beforeAll(async () => {
  await fx.init();
  await fx.issue("orders");
  await fx.issue("payments");
  const payments = fx.service((req) => {
    callers.push(req.headers.get("x-mesh-client-id"));
    return new Response("charged");
  });
  paymentsInbound = (await fx.proxy("payments", payments.url)).ports.inbound;
});

afterAll(async () => {
  for (const p of started) if (p.exitCode === null && p.signalCode === null) process.kill(p.pid, "SIGKILL");
  await fx.close();
});

/** `mesh run` flags for a sidecar on loopback with ephemeral ports. */
function runArgs(service: string, upstream = "http://127.0.0.1:9", extra: string[] = []): string[] {
  return ["run", "--service", service, "--upstream", upstream, "--certs-dir", join(fx.tmp.path, "certs", service),
    "--inbound", "127.0.0.1:0", "--outbound", "127.0.0.1:0", "--admin", "127.0.0.1:0", ...extra];
}

/** Runs `mesh run` to completion (bounded), capturing its output. */
async function meshRun(args: string[], cmd: string[], timeoutMs = 20_000) {
  const proc = Bun.spawn([process.execPath, MAIN, ...args, "--", ...cmd], { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  started.push(proc);
  const [out, err] = [new Response(proc.stdout).text(), new Response(proc.stderr).text()];
  const code = await within(proc.exited, timeoutMs, "mesh run to exit");
  return { code, out: await out, err: await err, report: JSON.parse((await out).split("\n")[0] || "{}") as Report };
}

interface Report {
  pid: number;
  accepting: boolean;
  ready: number;
  inbound: number;
  outbound: number;
  admin: number;
  env: Record<string, string | undefined> & { runtime?: string[]; tcp?: Record<string, string> };
}

async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: Timer | undefined;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms)));
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

async function accepting(port: number): Promise<boolean> {
  try {
    (await Bun.connect({ hostname: "127.0.0.1", port, socket: { data() {} } })).end();
    return true;
  } catch {
    return false;
  }
}


/** What is left on a stream whose first line startMesh already read. */
async function readRest(stream: ReadableStream<Uint8Array>): Promise<string> {
  const reader = stream.getReader();
  const decoder = new TextDecoder();
  let text = "";
  for (let next = await reader.read(); !next.done; next = await reader.read()) text += decoder.decode(next.value);
  return text;
}

const bun = (...args: string[]) => [process.execPath, SERVICE, ...args];

test("a batch job calls another service through its sidecar and exits 0; the callee sees its SPIFFE ID", async () => {
  const config = fx.config("orders-run", { payments: [paymentsInbound] });
  const before = callers.length;
  const r = await meshRun(runArgs("orders", undefined, ["--config", config]), bun("call", "http://payments/charge"));
  expect(r.code).toBe(0);
  expect(r.out).toContain("charged");
  expect(callers.slice(before)).toEqual([ORDERS_ID]);
  expect(r.report.env).toMatchObject({
    MESH_SERVICE: "orders",
    HTTP_PROXY: `http://127.0.0.1:${r.report.outbound}`,
    http_proxy: `http://127.0.0.1:${r.report.outbound}`,
  });
  expect(r.report.env.NO_PROXY?.split(",")).toEqual(expect.arrayContaining(["localhost", "127.0.0.1", "::1"]));
  expect(r.report.env.runtime).toEqual([]);
});

test("a gRPC client under mesh run dials a service by name: through http_proxy and CONNECT, the callee sees its SPIFFE ID", async () => {
  await fx.issue("greeter");
  const greeter = await greeterService();
  try {
    const greeterProxy = await fx.proxy("greeter", `http://127.0.0.1:${greeter.port}`);
    const config = fx.config("orders-grpc", { greeter: [greeterProxy.ports.inbound] });
    const r = await meshRun(runArgs("orders", undefined, ["--config", config]), [process.execPath, GRPC_CALL, "greeter:50051", "ada"]);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.out.split("\n")[0]!)).toMatchObject({ message: "hello ada", caller: ORDERS_ID });
  } finally {
    await greeter.stop();
  }
});

test("a TCP upstream under mesh run: the command finds its local listener in MESH_TCP_<SERVICE>_<PORT>, even on an ephemeral port", async () => {
  await fx.issue("db");
  const echo = tcpEchoService();
  try {
    const ports = `  ports:\n    - {name: pg, port: 5432, protocol: tcp, targetPort: ${echo.port}}\n`;
    const service = (endpoint?: number) => `apiVersion: mesh.dev/v1alpha1\nkind: Service\nmetadata:\n  name: db\nspec:\n${ports}${endpoint ? `  endpoints:\n    - {address: 127.0.0.1, port: ${endpoint}}\n` : ""}`;
    const dbConfig = join(fx.tmp.path, "db-run.yaml");
    writeFileSync(dbConfig, service());
    const db = await fx.proxy("db", "http://127.0.0.1:9", dbConfig);
    const ordersConfig = join(fx.tmp.path, "orders-tcp-run.yaml");
    writeFileSync(ordersConfig, service(db.ports.inbound));
    const r = await meshRun(runArgs("orders", undefined, ["--config", ordersConfig, "--tcp-upstream", "db:5432=127.0.0.1:0"]), bun("tcp", "MESH_TCP_DB_5432"));
    expect(r.code).toBe(0);
    expect(Object.keys(r.report.env.tcp ?? {})).toEqual(["MESH_TCP_DB_5432"]);
    expect(r.report.env.tcp!.MESH_TCP_DB_5432).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(r.out.split("\n")[1]).toBe("pingbye 4");
  } finally {
    echo.stop();
  }
});

test("the command's exit code is mesh run's, and the sidecar's ports are closed afterwards", async () => {
  const r = await meshRun(runArgs("orders"), bun("report", "3"));
  expect(r.code).toBe(3);
  expect(r.err).toContain("proxy drained");
  for (const port of [r.report.inbound, r.report.outbound, r.report.admin]) {
    expect(port).toBeGreaterThan(0);
    expect(await accepting(port)).toBe(false);
  }
});

test("the command starts only once the sidecar is ready", async () => {
  const r = await meshRun(runArgs("orders"), bun("report", "0"));
  expect(r.code).toBe(0);
  // Checked first thing in the command, before it did anything else.
  expect(r.report.accepting).toBe(true);
  expect(r.report.ready).toBe(200);
});

test("SIGTERM to mesh run reaches the command; both exit and nothing is left running", async () => {
  const run = await startMesh([...runArgs("orders"), "--", ...bun("wait-term")]);
  const report = run.ready as unknown as Report;
  expect(pidAlive(report.pid)).toBe(true);
  run.proc.kill("SIGTERM");
  const rest = readRest(run.proc.stdout);
  expect(await within(run.proc.exited, 15_000, "mesh run to exit")).toBe(0);
  expect(await rest).toContain("got SIGTERM");
  expect(pidAlive(report.pid)).toBe(false);
  expect(await accepting(report.outbound)).toBe(false);
  expect(await accepting(report.admin)).toBe(false);
});

test("SIGTERM: the sidecar stops taking inbound and says not ready before the command hears it; outbound serves until it exits", async () => {
  const run = await startMesh([...runArgs("orders"), "--", ...bun("slow-term")]);
  const report = run.ready as unknown as Report;
  expect(await accepting(report.inbound)).toBe(true);
  const rest = readRest(run.proc.stdout);
  run.proc.kill("SIGTERM");
  await Bun.sleep(500);
  // The command is still shutting down: callers must already be going elsewhere.
  expect(pidAlive(report.pid)).toBe(true);
  expect(await accepting(report.inbound)).toBe(false);
  expect((await fetch(`http://127.0.0.1:${report.admin}/ready`)).status).toBe(503);
  expect(await within(run.proc.exited, 15_000, "mesh run to exit")).toBe(0);
  expect(await rest).toContain("outbound during shutdown: true");
});

test("with its control plane unreachable the command waits for config; SIGTERM meanwhile ends it all without starting it: 143", async () => {
  // The certificate is at hand (issued by the CA), so the sidecar starts; the control plane never answers.
  const proc = Bun.spawn([process.execPath, MAIN, ...runArgs("orders", undefined, ["--control-plane", `https://127.0.0.1:${freePort()}`]), "--", ...bun("report", "0")], { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  started.push(proc);
  const out = new Response(proc.stdout).text();
  let err = "";
  const reading = (async () => {
    for await (const chunk of proc.stderr) err += new TextDecoder().decode(chunk);
  })();
  for (let i = 0; i < 150 && !err.includes("proxy ready"); i++) await Bun.sleep(100);
  await Bun.sleep(200);
  proc.kill("SIGTERM");
  expect(await within(proc.exited, 15_000, "mesh run to exit")).toBe(143);
  await reading;
  expect(err).toContain("stopped before the service started");
  expect(err).toContain("proxy drained");
  // The command never ran: it would have printed its report.
  expect(await out).toBe("");
});

test("a command that ignores SIGTERM is killed after the drain timeout: 128+9", async () => {
  const run = await startMesh([...runArgs("orders", undefined, ["--drain-timeout", "500ms"]), "--", ...bun("ignore-term")]);
  const report = run.ready as unknown as Report;
  run.proc.kill("SIGTERM");
  expect(await within(run.proc.exited, 15_000, "mesh run to exit")).toBe(137);
  expect(pidAlive(report.pid)).toBe(false);
  expect(run.stderr()).toContain("killing it");
});

test("a command that does not exist: exit 127 naming it, and the sidecar drains", async () => {
  for (const cmd of ["mesh-run-no-such-command", join(fx.tmp.path, "no", "such", "file")]) {
    const r = await meshRun(runArgs("orders"), [cmd, "--flag"]);
    expect(r.code).toBe(127);
    expect(r.err).toContain(`cannot start "${cmd}": not found`);
    expect(r.err).toContain("proxy drained");
  }
});

test("no command after -- is a usage error (64)", async () => {
  const r = await mesh(...runArgs("orders"));
  expect(r.code).toBe(64);
  expect(r.err).toContain("no command");
  expect(r.err).toContain("Usage: mesh run [flags] -- COMMAND [ARGS…]");
});

test("inbound mTLS traffic reaches the service mesh run started, with the caller's identity", async () => {
  const port = freePort();
  const run = await startMesh([...runArgs("payments", `http://127.0.0.1:${port}`), "--", ...bun("serve", String(port))]);
  const report = run.ready as unknown as Report;
  const orders = await fx.proxy("orders", fx.echo("orders").url, fx.config("orders-to-run", { payments: [report.inbound] }));
  const res = await fetch(`http://127.0.0.1:${orders.ports.outbound}/hello`, { headers: { host: "payments" } });
  expect(res.status).toBe(200);
  expect(await res.json()).toEqual({ service: "payments", caller: ORDERS_ID });
  run.proc.kill("SIGTERM");
  expect(await within(run.proc.exited, 15_000, "mesh run to exit")).toBe(0);
  expect(pidAlive(report.pid)).toBe(false);
});

test("SIGTERM to one of two instances under steady traffic: no caller request fails", async () => {
  const instances = await Promise.all(
    [0, 1].map(async () => {
      const port = freePort();
      const run = await startMesh([...runArgs("payments", `http://127.0.0.1:${port}`), "--", ...bun("serve", String(port))]);
      return { run, report: run.ready as unknown as Report };
    }),
  );
  const orders = await fx.proxy("orders", fx.echo("orders").url, fx.config("orders-to-two", { payments: instances.map((i) => i.report.inbound) }));
  const traffic = steadyTraffic(orders.ports.outbound, "payments", 5, 2_000);
  await Bun.sleep(500);
  instances[0]!.run.proc.kill("SIGTERM");
  expect(await within(instances[0]!.run.proc.exited, 15_000, "mesh run to exit")).toBe(0);
  await Bun.sleep(300);
  const { sent, failures } = await traffic.stop();
  expect(sent).toBeGreaterThan(50);
  expect(failures).toEqual([]);
  instances[1]!.run.proc.kill("SIGTERM");
  expect(await within(instances[1]!.run.proc.exited, 15_000, "mesh run to exit")).toBe(0);
});
