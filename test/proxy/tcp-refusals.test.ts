/**
 * Opaque TCP connections that must not go through, and the ones that go through despite a
 * fault, as real processes on loopback: a port the callee's Service does not declare tcp,
 * an HTTP port, a service nobody knows, a peer with the wrong identity, an
 * AuthorizationPolicy, a dead endpoint (retried elsewhere), and a service outside the mesh.
 * Each refusal reaches the client as a reset, with no byte of the service's, and is
 * counted and logged with its reason on each side.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fixtureFor, metricValue } from "../helpers/mesh-fixture.ts";
import { freePort } from "../helpers/ports.ts";
import { tcpEchoService, tcpExchange, type TcpService } from "../helpers/tcp.ts";
import { eventually } from "../helpers/wait.ts";

const fx = fixtureFor("orders", "web", "db", "payments");
let echo: TcpService;
let hidden: TcpService;
let payments: TcpService;
let db: Awaited<ReturnType<typeof fx.proxy>>;
let orders: Awaited<ReturnType<typeof fx.proxy>>;
let web: Awaited<ReturnType<typeof fx.proxy>>;
/** orders' local listeners, by upstream. */
const local: Record<string, number> = {};
const dbLog = () => join(fx.tmp.path, "db-access.log");

const doc = (kind: string, name: string, spec: string) => `---\napiVersion: mesh.dev/v1alpha1\nkind: ${kind}\nmetadata:\n  name: ${name}\nspec:\n${spec}`;
const endpoints = (...ports: number[]) => `  endpoints:\n${ports.map((p) => `    - address: 127.0.0.1\n      port: ${p}\n`).join("")}`;
const tcpPort = (name: string, port: number, target: number) => `    - name: ${name}\n      port: ${port}\n      protocol: tcp\n      targetPort: ${target}\n`;

function write(name: string, text: string): string {
  const path = join(fx.tmp.path, `${name}.yaml`);
  writeFileSync(path, text);
  return path;
}

const UPSTREAMS = ["db:5432", "db:5433", "db:80", "nosuch:5432", "mimic:5432", "flaky:5432", "ext:7000"];

beforeAll(async () => {
  echo = tcpEchoService();
  hidden = tcpEchoService();
  payments = tcpEchoService();
  const dbPorts = `  ports:\n    - name: http\n      port: 80\n${tcpPort("pg", 5432, echo.port)}`;
  // web may not connect: a deny rule whose HTTP parts a connection cannot have is read without them.
  const denyWeb = doc("AuthorizationPolicy", "no-web", "  service: db\n  action: deny\n  rules:\n    - from: { services: [web] }\n      to: { methods: [DELETE] }\n");
  db = await fx.proxy("db", fx.echo("db-web").url, write("db", doc("Service", "db", dbPorts) + denyWeb), ["--access-log", dbLog()]);
  const pay = await fx.proxy("payments", fx.echo("payments-web").url, write("payments", doc("Service", "payments", `  ports:\n${tcpPort("pg", 5432, payments.port)}`)));
  const dead = await freePort();
  const callerView =
    // orders believes db serves a second tcp port, on the hidden service's port: db's own Service says otherwise.
    doc("Service", "db", `  ports:\n    - name: http\n      port: 80\n${tcpPort("pg", 5432, echo.port)}${tcpPort("hidden", 5433, hidden.port)}${endpoints(db.ports.inbound)}`) +
    // "mimic" claims payments' sidecar as its endpoint: its certificate names payments, not mimic.
    doc("Service", "mimic", `  ports:\n${tcpPort("pg", 5432, payments.port)}${endpoints(pay.ports.inbound)}`) +
    // db under another name, behind a dead endpoint and the live one.
    doc("Service", "flaky", `  identity: db\n  ports:\n${tcpPort("pg", 5432, echo.port)}${endpoints(dead, db.ports.inbound)}`) +
    // outside the mesh: plain TCP to each endpoint's address at targetPort.
    doc("Service", "ext", `  mtls: false\n  ports:\n${tcpPort("pg", 7000, echo.port)}${endpoints(7000)}`);
  orders = await fx.proxy("orders", fx.echo("orders").url, write("orders", callerView), [
    ...UPSTREAMS.flatMap((u) => ["--tcp-upstream", `${u}=127.0.0.1:0`]),
    "--access-log", join(fx.tmp.path, "orders-access.log"),
  ]);
  const ports = (orders.ready as { tcp: number[] }).tcp;
  UPSTREAMS.forEach((u, i) => (local[u] = ports[i]!));
  web = await fx.proxy("web", fx.echo("web").url, write("web", doc("Service", "db", `  ports:\n${tcpPort("pg", 5432, echo.port)}${endpoints(db.ports.inbound)}`)), ["--tcp-upstream", "db:5432=127.0.0.1:0"]);
});
afterAll(() => {
  for (const s of [echo, hidden, payments]) s?.stop();
});

const outcome = (port: number, labels: Record<string, string>) => metricValue(port, "mesh_tcp_connections_total", labels);

/** A refused connection: no byte of any service's, and the client's connection does not end cleanly with data. */
async function refused(port: number) {
  const r = await tcpExchange(port, "secret");
  expect(r.text).toBe("");
  return r;
}

describe("refused", () => {
  test("at start, each upstream the config cannot carry is named in a warning", () => {
    const err = orders.stderr();
    expect(err).toContain('tcp upstream: no Service \\"nosuch\\" in the config; its connections are refused');
    expect(err).toContain("tcp upstream: port 80 of db is not a tcp port");
    expect(err).not.toContain("port 5432 of db is not");
  });

  test("a port the service's own Service does not declare tcp: the callee refuses, and nothing reaches that port", async () => {
    await refused(local["db:5433"]!);
    expect(await eventually(async () => (await outcome(db.ports.admin, { direction: "inbound", peer: "orders", result: "no-such-port" })) === 1)).toBe(true);
    expect(await eventually(async () => (await outcome(orders.ports.admin, { direction: "outbound", peer: "db", result: "no-such-port" })) === 1)).toBe(true);
    expect(hidden.accepted).toBe(0);
  });

  test("an HTTP port: the caller's sidecar refuses without connecting", async () => {
    const before = await metricValue(db.ports.admin, "mesh_connections_total", { direction: "inbound" });
    await refused(local["db:80"]!);
    expect(await eventually(async () => (await outcome(orders.ports.admin, { direction: "outbound", peer: "db", result: "no-such-port" })) === 2)).toBe(true);
    expect(await metricValue(db.ports.admin, "mesh_connections_total", { direction: "inbound" })).toBe(before);
  });

  test("a service no config names: counted under peer unknown", async () => {
    await refused(local["nosuch:5432"]!);
    expect(await eventually(async () => (await outcome(orders.ports.admin, { direction: "outbound", peer: "unknown", result: "unknown-service" })) === 1)).toBe(true);
  });

  test("a peer whose certificate names another service: refused in the handshake, before a byte is sent", async () => {
    await refused(local["mimic:5432"]!);
    expect(await eventually(async () => (await outcome(orders.ports.admin, { direction: "outbound", peer: "mimic", result: "peer-identity" })) === 1)).toBe(true);
    expect(payments.accepted).toBe(0);
    expect(await metricValue(orders.ports.admin, "mesh_tls_failures_total", { direction: "outbound", reason: "peer-identity" })).toBeGreaterThanOrEqual(1);
    // The client saw only its connection closed: the sidecar's log says why.
    const said = orders.stderr().split("\n").filter((l) => l.includes("refused an upstream's certificate"));
    expect(said.length).toBe(1);
    expect(said[0]).toMatch(/expected spiffe:\/\/[^"]*\/mimic/);
  });

  test("an AuthorizationPolicy that denies the caller: refused at the callee, the service never sees it, and the line says why", async () => {
    const accepted = echo.accepted;
    await refused((web.ready as { tcp: number[] }).tcp[0]!);
    expect(await eventually(async () => (await outcome(db.ports.admin, { direction: "inbound", peer: "web", result: "denied" })) === 1)).toBe(true);
    expect(await metricValue(db.ports.admin, "mesh_authorization_denied_total", { peer: "web", policy: "default/no-web" })).toBe(1);
    expect(echo.accepted).toBe(accepted);
    // orders still may: the rule names web alone.
    expect((await tcpExchange(local["db:5432"]!, "ok")).text).toBe("okbye 2");
    await eventually(() => readFileSync(dbLog(), "utf8").includes('"result":"denied"'), 3000);
    const lines = readFileSync(dbLog(), "utf8").trim().split("\n").map((l) => JSON.parse(l));
    const denied = lines.find((l) => l.result === "denied");
    expect(denied).toMatchObject({ direction: "inbound", protocol: "tcp", authority: `db:${echo.port}`, peer: "spiffe://mesh.local/ns/default/sa/web", bytes_received: 0, bytes_sent: 0 });
  });
});

describe("carried despite a fault, or outside the mesh", () => {
  test("a dead endpoint: each connection goes to the live one", async () => {
    for (let i = 0; i < 6; i++) expect((await tcpExchange(local["flaky:5432"]!, `try ${i}`)).text).toBe(`try ${i}bye 5`);
    // Counted when the sidecar sees both sides closed, which may be just after the client did.
    expect(await eventually(async () => (await outcome(orders.ports.admin, { direction: "outbound", peer: "flaky", result: "ok" })) === 6)).toBe(true);
    // Connect retries are counted by peer, as HTTP's are.
    const retries = (await (await fetch(`http://127.0.0.1:${orders.ports.admin}/metrics`)).text()).split("\n").filter((l) => l.startsWith("mesh_retries_total{"));
    expect(retries.every((l) => l.startsWith('mesh_retries_total{peer="'))).toBe(true);
  });

  test("a service outside the mesh is reached in plain TCP at its targetPort", async () => {
    const r = await tcpExchange(local["ext:7000"]!, "plain");
    expect(r.text).toBe("plainbye 5");
    expect(await eventually(async () => (await outcome(orders.ports.admin, { direction: "outbound", peer: "ext", result: "ok" })) === 1)).toBe(true);
  });
});
