/**
 * Opaque TCP with sidecars that follow a control plane: the callee's sidecar gets its own
 * Service (even when it calls nothing of its own) and carries connections to the tcp ports
 * it declares; the caller's learns the endpoint; a Service changed later applies to the
 * next connection.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { tempDir } from "../helpers/cli.ts";
import { cpSidecar, eventually, serviceManifest, startControlPlane, type Sidecar, type TestControlPlane } from "../helpers/control-plane.ts";
import { echoService, metricValue, type EchoService } from "../helpers/mesh-fixture.ts";
import { stopAll } from "../helpers/procs.ts";
import { tcpEchoService, tcpExchange, type TcpService } from "../helpers/tcp.ts";
import { endpointsSeenBy } from "../helpers/traffic.ts";

const tmp = tempDir("mesh-cp-tcp-");
let cp: TestControlPlane;
let echo: TcpService;
let db: Sidecar;
let orders: Sidecar;
let local: number;
const webs: EchoService[] = [];

const dbService = (ports: Record<string, unknown>[]) => ({ ...serviceManifest("db"), spec: { ports: [{ name: "http", port: 80 }, ...ports] } });

beforeAll(async () => {
  echo = tcpEchoService();
  cp = await startControlPlane(tmp.path);
  await cp.apply(serviceManifest("orders"), dbService([{ name: "pg", port: 5432, protocol: "tcp", targetPort: echo.port }]));
  for (const name of ["db", "orders"]) webs.push(echoService(name));
  // db calls orders only: its own Service comes all the same.
  db = await cpSidecar(cp, tmp.path, "db", "1", webs[0]!.url, ["--calls", "orders"]);
  orders = await cpSidecar(cp, tmp.path, "orders", "1", webs[1]!.url, ["--calls", "db", "--tcp-upstream", "db:5432=127.0.0.1:0"]);
  local = (orders.ready as { tcp: number[] }).tcp[0]!;
  expect(await eventually(async () => (await endpointsSeenBy(orders.ports.admin, "db")).length === 1)).toBe(true);
});

afterAll(async () => {
  await stopAll();
  echo?.stop();
  for (const w of webs) w.server.stop(true);
  tmp.cleanup();
});

test("a connection reaches the registered instance's tcp port", async () => {
  const r = await tcpExchange(local, "select 1");
  expect(r.error).toBeUndefined();
  expect(r.text).toBe("select 1bye 8");
  const dump = (await (await fetch(`http://127.0.0.1:${db.ports.admin}/config_dump`)).json()) as { tcpPorts?: number[] };
  expect(dump.tcpPorts).toEqual([echo.port]);
});

test("a Service that no longer declares the port: the next connection reaches nothing", async () => {
  await cp.apply(dbService([]));
  const accepted = echo.accepted;
  expect(await eventually(async () => (await tcpExchange(local, "again")).text === "", 10_000)).toBe(true);
  expect(echo.accepted).toBe(accepted);
  expect(await metricValue(orders.ports.admin, "mesh_tcp_connections_total", { direction: "outbound", peer: "db", result: "no-such-port" })).toBeGreaterThanOrEqual(1);
});
