/**
 * Open carried connections under a config change at the callee: its sidecar checks them
 * again as it checks a new one. An AuthorizationPolicy that comes to deny the caller, or a
 * tcp port taken out of the service's Service, resets them both ways, counted and logged
 * with the result a refusal at open has (denied, no-such-port); a change that still admits
 * them leaves them carrying. Real processes on loopback; no probe connection is made, so
 * each count is the open connection's alone.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Socket } from "bun";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fixtureFor, metricValue } from "../helpers/mesh-fixture.ts";
import { tcpEchoService, type TcpService } from "../helpers/tcp.ts";
import { eventually } from "../helpers/wait.ts";

const fx = fixtureFor("orders", "db");
let pg: TcpService;
let extra: TcpService;
let db: Awaited<ReturnType<typeof fx.proxy>>;
let orders: Awaited<ReturnType<typeof fx.proxy>>;
let dbFile: string;
/** orders' local listeners, by upstream. */
const local: Record<string, number> = {};
const dbLog = () => join(fx.tmp.path, "db-access.log");

const doc = (kind: string, name: string, spec: string) => `---\napiVersion: mesh.dev/v1alpha1\nkind: ${kind}\nmetadata:\n  name: ${name}\nspec:\n${spec}`;
const tcpPort = (name: string, port: number, target: number) => `    - {name: ${name}, port: ${port}, protocol: tcp, targetPort: ${target}}\n`;
const allow = (...who: string[]) => doc("AuthorizationPolicy", "callers", `  service: db\n  action: allow\n  rules:\n    - from: { services: [${who.join(", ")}] }\n`);
const dbService = (withExtra: boolean) => doc("Service", "db", `  ports:\n    - {name: http, port: 80}\n${tcpPort("pg", 5432, pg.port)}${withExtra ? tcpPort("extra", 5433, extra.port) : ""}`);

/** db's config edited live: its Service (with or without port 5433) and who may call. */
async function dbConfig(withExtra: boolean, ...callers: string[]): Promise<void> {
  writeFileSync(dbFile, dbService(withExtra) + allow(...callers));
  // In force once the sidecar shows it: every open connection has been checked again by then.
  const inForce = async () => {
    const dump = (await (await fetch(`http://127.0.0.1:${db.ports.admin}/config_dump`)).json()) as { tcpPorts?: number[]; authorization: { rules: { from: { services: string[] } }[] }[] };
    const named = dump.authorization[0]?.rules[0]?.from.services ?? [];
    return (dump.tcpPorts ?? []).includes(extra.port) === withExtra && named.join() === callers.join();
  };
  expect(await eventually(inForce, 10_000, 50)).toBe(true);
}

/** An application's connection to a local listener, kept open. */
interface Conn {
  text: string;
  closed: boolean;
  sock: Socket<undefined>;
}
async function open(port: number): Promise<Conn> {
  const c = { text: "", closed: false } as Conn;
  c.sock = await Bun.connect<undefined>({
    hostname: "127.0.0.1",
    port,
    allowHalfOpen: true,
    socket: { data: (_s, chunk) => void (c.text += chunk.toString("latin1")), close: () => void (c.closed = true), error() {} },
  });
  return c;
}
/** Writes `text` and waits for its echo; false if the connection closed or it did not come. */
async function echoed(c: Conn, text: string): Promise<boolean> {
  const want = c.text + text;
  if (!c.closed) c.sock.write(text);
  return eventually(() => c.closed || c.text === want, 3000).then(() => c.text === want);
}

const inbound = (result: string) => metricValue(db.ports.admin, "mesh_tcp_connections_total", { direction: "inbound", peer: "orders", result });

beforeAll(async () => {
  pg = tcpEchoService();
  extra = tcpEchoService();
  dbFile = join(fx.tmp.path, "db.yaml");
  writeFileSync(dbFile, dbService(true) + allow("orders"));
  db = await fx.proxy("db", fx.echo("db-web").url, dbFile, ["--access-log", dbLog()]);
  const callerView = doc("Service", "db", `  ports:\n    - {name: http, port: 80}\n${tcpPort("pg", 5432, pg.port)}${tcpPort("extra", 5433, extra.port)}  endpoints:\n    - {address: 127.0.0.1, port: ${db.ports.inbound}}\n`);
  const callerFile = join(fx.tmp.path, "orders.yaml");
  writeFileSync(callerFile, callerView);
  orders = await fx.proxy("orders", fx.echo("orders-web").url, callerFile, ["--tcp-upstream", "db:5432=127.0.0.1:0", "--tcp-upstream", "db:5433=127.0.0.1:0"]);
  const ports = (orders.ready as { tcp: number[] }).tcp;
  ["db:5432", "db:5433"].forEach((u, i) => (local[u] = ports[i]!));
});
afterAll(() => {
  for (const s of [pg, extra]) s?.stop();
});

describe("open carried connections under a config change at the callee", () => {
  test("a change that still admits them (another caller allowed too) leaves them carrying", async () => {
    const c = await open(local["db:5432"]!);
    expect(await echoed(c, "before;")).toBe(true);
    await dbConfig(true, "orders", "web");
    expect(await echoed(c, "after;")).toBe(true);
    c.sock.terminate();
    await dbConfig(true, "orders");
  }, 30_000);

  test("an AuthorizationPolicy that comes to deny the caller resets them both ways, counted and logged as denied", async () => {
    const open0 = pg.open;
    const c = await open(local["db:5432"]!);
    expect(await echoed(c, "before;")).toBe(true);
    expect(pg.open).toBe(open0 + 1);
    const before = { denied: await inbound("denied"), policy: await metricValue(db.ports.admin, "mesh_authorization_denied_total", { peer: "orders" }) };
    await dbConfig(true, "web");
    expect(await eventually(() => c.closed, 3000)).toBe(true);
    expect(await echoed(c, "after;")).toBe(false);
    // The service's side is closed too, and the connection is counted once, as a refusal at open is.
    expect(await eventually(() => pg.open === open0, 3000)).toBe(true);
    expect(await eventually(async () => (await inbound("denied")) === before.denied + 1, 3000)).toBe(true);
    expect(await metricValue(db.ports.admin, "mesh_authorization_denied_total", { peer: "orders" })).toBe(before.policy + 1);
    expect(await eventually(() => readFileSync(dbLog(), "utf8").includes('"result":"denied"'), 3000)).toBe(true);
    const line = readFileSync(dbLog(), "utf8").trim().split("\n").map((l) => JSON.parse(l)).find((l) => l.result === "denied");
    // Unlike a refusal at open, it had carried bytes.
    expect(line).toMatchObject({ direction: "inbound", protocol: "tcp", authority: `db:${pg.port}`, bytes_received: "before;".length, bytes_sent: "before;".length });
    await dbConfig(true, "orders");
  }, 30_000);

  test("a tcp port taken out of the Service resets those open to it (no-such-port); those to the ports kept go on", async () => {
    const kept = await open(local["db:5432"]!);
    const gone = await open(local["db:5433"]!);
    expect([await echoed(kept, "a;"), await echoed(gone, "b;")]).toEqual([true, true]);
    const refusedBefore = await inbound("no-such-port");
    await dbConfig(false, "orders");
    expect(await eventually(() => gone.closed, 3000)).toBe(true);
    expect(await eventually(async () => (await inbound("no-such-port")) === refusedBefore + 1, 3000)).toBe(true);
    expect({ gone: await echoed(gone, "c;"), kept: await echoed(kept, "d;") }).toEqual({ gone: false, kept: true });
    kept.sock.terminate();
    await dbConfig(true, "orders");
  }, 30_000);
});
