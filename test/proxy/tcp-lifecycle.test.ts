/**
 * The life of a carried TCP connection, through real sidecars on loopback: a service that
 * speaks first (a database's greeting) is heard before the client sends anything; a
 * connection silent for the DestinationPolicy's tcpIdle is closed, and one that lasts its
 * tcpMaxDuration is reset, by the callers' sidecars and by the service's own; a connection open when
 * the caller's sidecar drains is ended in order (FIN, no reset) and the sidecar exits 0;
 * and the callee's sidecar follows its config: a tcp port taken out of its Service is no
 * longer reached.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Socket, TCPSocketListener } from "bun";
import { fixtureFor, metricValue } from "../helpers/mesh-fixture.ts";
import { tcpEchoService, tcpExchange, type TcpService } from "../helpers/tcp.ts";
import { eventually } from "../helpers/wait.ts";

const fx = fixtureFor("orders", "db");
let echo: TcpService;
let greeter: TCPSocketListener<undefined>;
let db: Awaited<ReturnType<typeof fx.proxy>>;

const doc = (kind: string, name: string, spec: string) => `---\napiVersion: mesh.dev/v1alpha1\nkind: ${kind}\nmetadata:\n  name: ${name}\nspec:\n${spec}`;

function dbService(endpoint?: number): string {
  const ports = `  ports:\n    - {name: pg, port: 5432, protocol: tcp, targetPort: ${echo.port}}\n    - {name: smtp, port: 25, protocol: tcp, targetPort: ${greeter.port}}\n`;
  return doc("Service", "db", ports + (endpoint ? `  endpoints:\n    - {address: 127.0.0.1, port: ${endpoint}}\n` : ""));
}

function write(name: string, text: string): string {
  const path = join(fx.tmp.path, `${name}.yaml`);
  writeFileSync(path, text);
  return path;
}

/** A caller's sidecar with db's two tcp ports bound locally; `policy`: more documents for its config. */
async function caller(policy = "", flags: string[] = [], endpoint = db.ports.inbound) {
  const p = await fx.proxy("orders", fx.echo("orders").url, write(`orders-${Math.random()}`, dbService(endpoint) + policy), [
    "--tcp-upstream", "db:5432=127.0.0.1:0",
    "--tcp-upstream", "db:25=127.0.0.1:0",
    ...flags,
  ]);
  const [pg, smtp] = (p.ready as { tcp: number[] }).tcp;
  return { ...p, pg: pg!, smtp: smtp! };
}

/** Opens a connection and keeps it: what it reads, and how it ended. */
async function hold(port: number) {
  const state = { text: "", closed: false, error: undefined as string | undefined, socket: undefined as Socket<undefined> | undefined };
  state.socket = await Bun.connect<undefined>({
    hostname: "127.0.0.1",
    port,
    allowHalfOpen: true,
    socket: {
      data: (_s, chunk) => void (state.text += chunk.toString()),
      error: (_s, err) => void (state.error ??= err.message),
      close: (_s, err) => {
        if (err) state.error ??= err.message;
        state.closed = true;
      },
    },
  });
  return state;
}

beforeAll(async () => {
  echo = tcpEchoService();
  greeter = Bun.listen<undefined>({ hostname: "127.0.0.1", port: 0, socket: { open: (s) => void s.write("220 db ready\r\n"), data: (s, d) => void s.write(d) } });
  db = await fx.proxy("db", fx.echo("db-web").url, write("db", dbService()));
});
afterAll(() => {
  echo?.stop();
  greeter?.stop(true);
});

describe("carried connections", () => {
  test("a service that speaks first is heard before the client sends a byte", async () => {
    const orders = await caller();
    const c = await hold(orders.smtp);
    expect(await eventually(() => c.text === "220 db ready\r\n", 5000)).toBe(true);
    c.socket!.write("HELO\r\n");
    expect(await eventually(() => c.text.endsWith("HELO\r\n"), 5000)).toBe(true);
    c.socket!.end();
  });

  test("a connection silent for tcpIdle is closed, and counted as idle", async () => {
    const orders = await caller(doc("DestinationPolicy", "db", "  service: db\n  timeouts: {tcpIdle: 1s}\n"));
    const c = await hold(orders.pg);
    c.socket!.write("x");
    expect(await eventually(() => c.text === "x", 5000)).toBe(true);
    // Bun's socket timeouts fire on 4-second ticks: within 1 s to ~5 s of the last byte.
    expect(await eventually(() => c.closed, 12_000)).toBe(true);
    expect(await eventually(async () => (await metricValue(orders.ports.admin, "mesh_tcp_connections_total", { direction: "outbound", peer: "db", result: "idle" })) === 1)).toBe(true);
  }, 20_000);

  test("the service's own DestinationPolicy sets its sidecar's idle timeout too, whatever its callers' say", async () => {
    const quick = await fx.proxy("db", fx.echo("db-quick").url, write("db-quick", dbService() + doc("DestinationPolicy", "db", "  service: db\n  timeouts: {tcpIdle: 1s}\n")));
    // This caller knows no policy for db: its own side would wait an hour.
    const orders = await caller("", [], quick.ports.inbound);
    const c = await hold(orders.pg);
    c.socket!.write("y");
    expect(await eventually(() => c.text === "y", 5000)).toBe(true);
    expect(await eventually(() => c.closed, 12_000)).toBe(true);
    expect(await eventually(async () => (await metricValue(quick.ports.admin, "mesh_tcp_connections_total", { direction: "inbound", result: "idle" })) === 1)).toBe(true);
  }, 20_000);

  /** Writes to `c` every 100 ms until it closes or `ms` pass: a connection that is never idle. */
  async function keepBusy(c: Awaited<ReturnType<typeof hold>>, ms: number): Promise<number> {
    const started = performance.now();
    while (!c.closed && performance.now() - started < ms) {
      c.socket!.write(".");
      await Bun.sleep(100);
    }
    return performance.now() - started;
  }

  test("a busy connection is reset at tcpMaxDuration, counted as max-duration; the next one is carried", async () => {
    const orders = await caller(doc("DestinationPolicy", "db", "  service: db\n  timeouts: {tcpMaxDuration: 1s}\n"));
    const c = await hold(orders.pg);
    const lasted = await keepBusy(c, 8000);
    expect(c.closed).toBe(true);
    expect(lasted).toBeGreaterThan(800);
    // A reset, not a FIN: the client cannot take what it read for a whole answer.
    expect(c.error).toBeDefined();
    expect(c.text.length).toBeGreaterThan(3);
    expect(await eventually(async () => (await metricValue(orders.ports.admin, "mesh_tcp_connections_total", { direction: "outbound", peer: "db", result: "max-duration" })) === 1)).toBe(true);
    expect((await tcpExchange(orders.pg, "again")).text).toBe("againbye 5");
  }, 20_000);

  test("the service's own DestinationPolicy sets its sidecar's longest connection too, whatever its callers' say", async () => {
    const short = await fx.proxy("db", fx.echo("db-short").url, write("db-short", dbService() + doc("DestinationPolicy", "db", "  service: db\n  timeouts: {tcpMaxDuration: 1s}\n")));
    const orders = await caller("", [], short.ports.inbound);
    const c = await hold(orders.pg);
    await keepBusy(c, 8000);
    expect(c.closed).toBe(true);
    expect(c.error).toBeDefined();
    expect(await eventually(async () => (await metricValue(short.ports.admin, "mesh_tcp_connections_total", { direction: "inbound", result: "max-duration" })) === 1)).toBe(true);
  }, 20_000);

  test("a drain ends open connections in order, FIN both ways, and the sidecar exits 0", async () => {
    const orders = await caller();
    const c = await hold(orders.pg);
    c.socket!.write("before drain");
    expect(await eventually(() => c.text === "before drain", 5000)).toBe(true);
    const open = echo.open;
    orders.proc.kill("SIGTERM");
    expect(await orders.proc.exited).toBe(0);
    expect(await eventually(() => c.closed, 5000)).toBe(true);
    expect(c.error).toBeUndefined();
    // The service's side was ended too, not left open.
    expect(await eventually(() => echo.open === open - 1, 5000)).toBe(true);
  });
});

describe("limits", () => {
  test("the local listeners take places from --max-connections: past it a connection is closed at accept, and counted", async () => {
    const orders = await caller("", ["--max-connections", "2"]);
    const held = [await hold(orders.pg), await hold(orders.pg)];
    for (const c of held) c.socket!.write("x");
    expect(await eventually(() => held.every((c) => c.text === "x"), 5000)).toBe(true);
    const third = await tcpExchange(orders.pg, "over");
    expect(third.text).toBe("");
    expect(await metricValue(orders.ports.admin, "mesh_connections_refused_total", { direction: "outbound" })).toBe(1);
    for (const c of held) c.socket!.end();
    // Places come back when connections close.
    expect(await eventually(async () => (await tcpExchange(orders.pg, "again")).text === "againbye 5", 5000)).toBe(true);
  });

  test("a DestinationPolicy's maxConnections caps the connections to the service", async () => {
    const orders = await caller(doc("DestinationPolicy", "db", "  service: db\n  circuitBreaker: {maxConnections: 1}\n"));
    const first = await hold(orders.pg);
    first.socket!.write("x");
    expect(await eventually(() => first.text === "x", 5000)).toBe(true);
    expect((await tcpExchange(orders.pg, "second")).text).toBe("");
    expect(await eventually(async () => (await metricValue(orders.ports.admin, "mesh_tcp_connections_total", { direction: "outbound", peer: "db", result: "max-connections" })) === 1)).toBe(true);
    first.socket!.end();
  });
});

describe("the callee follows its config", () => {
  test("with no Service of its own declaring the port, the callee reaches nothing", async () => {
    const lone = await fx.proxy("db", fx.echo("db-web-2").url);
    const orders = await fx.proxy("orders", fx.echo("orders-2").url, write("orders-lone", dbService(lone.ports.inbound)), ["--tcp-upstream", "db:5432=127.0.0.1:0"]);
    const accepted = echo.accepted;
    const r = await tcpExchange((orders.ready as { tcp: number[] }).tcp[0]!, "anyone?");
    expect(r.text).toBe("");
    expect(await eventually(async () => (await metricValue(lone.ports.admin, "mesh_tcp_connections_total", { direction: "inbound", result: "no-such-port" })) === 1)).toBe(true);
    expect(echo.accepted).toBe(accepted);
  });
});
