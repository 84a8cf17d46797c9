/**
 * Review, as an attacker would, of two changes:
 *
 * A. A sidecar's refused FIRST config is reported anyway (POST /v1/config/ack while not
 *    registered), kept under /mesh/proxies/<ns>/<service>/unregistered with a 90 s lease,
 *    and shown by `mesh check` / the admin API.
 * B. Requests the proxy answers itself, and WebSocket upgrades, are counted, logged and
 *    traced.
 *
 * Every test asserts the correct (secure) behaviour: a failing test is a finding.
 * Loopback only; every process started here is stopped by pid.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createLogger } from "../../src/core/log.ts";
import { recordAck } from "../../src/control-plane/proxy-status.ts";
import { openSqliteStore } from "../../src/store/index.ts";
import { loadWorkloadCerts, type WorkloadCerts } from "../../src/proxy/certs.ts";
import { ControlPlaneAgent, type AgentTarget } from "../../src/proxy/control/agent.ts";
import { ConfigRejected } from "../../src/proxy/control/config-documents.ts";
import { ControlPlaneClient } from "../../src/proxy/control/cp-client.ts";
import { parseTraceParent } from "../../src/proxy/tracing/trace-context.ts";
import { mesh, tempDir } from "../helpers/cli.ts";
import { eventually, serviceManifest, startControlPlane, type TestControlPlane } from "../helpers/control-plane.ts";
import { fixtureFor, metricValue } from "../helpers/mesh-fixture.ts";
import { accessLogLines, denyPaths, otlpCollector, spanAttr as attr, tracingFlags, type Collector } from "../helpers/observability.ts";
import { testIssuer } from "../helpers/policies.ts";
import { rawExchange, type ClientTls } from "../helpers/raw-http.ts";
import { rawUpgrade, within, WsClient } from "../helpers/ws-client.ts";

// ───────────────────────────── A: refused first config ─────────────────────────────

const PAYMENTS_ID = "spiffe://mesh.local/ns/default/sa/payments";

interface ProxyItem {
  identity: string;
  namespace: string;
  service: string;
  endpoint: string;
  registered?: boolean;
  rejected?: { version: string; reason: string };
  acked?: string;
}

describe("A: a refused first config reported by a sidecar that is not registered", () => {
  const tmp = tempDir("mesh-obs-review-cp-");
  let cp: TestControlPlane;
  let admin: string[];
  const certs = { payments: "", orders: "", otherNsPayments: "", ledger: "" };
  const agents: ControlPlaneAgent[] = [];

  async function issue(service: string, namespace = "default"): Promise<string> {
    const dir = join(tmp.path, "certs", `${namespace}-${service}`);
    const r = await mesh("ca", "issue", "--service", service, "--namespace", namespace, "--ca-dir", cp.caDir, "--out", dir, "--force");
    if (r.code !== 0) throw new Error(r.err);
    return dir;
  }

  function api(certsDir: string, path: string, body: unknown): Promise<Response> {
    return fetch(`https://127.0.0.1:${cp.ports.api}${path}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
      tls: { cert: Bun.file(join(certsDir, "chain.pem")), key: Bun.file(join(certsDir, "key.pem")), ca: Bun.file(cp.bundle), checkServerIdentity: () => undefined },
    });
  }

  const reg = (port: number, extra: Record<string, unknown> = {}) => ({ namespace: "default", service: "payments", address: "127.0.0.1", port, weight: 1, ...extra });
  const ack = (certsDir: string, body: Record<string, unknown>) => api(certsDir, "/v1/config/ack", { version: "0123456789abcdef", ...body });

  async function proxies(): Promise<ProxyItem[]> {
    const r = await cp.admin("GET", "/v1/proxies");
    expect(r.status).toBe(200);
    return ((await r.json()) as { items: ProxyItem[] }).items;
  }
  const waiting = async (service = "payments") => (await proxies()).filter((p) => p.service === service && p.registered === false);

  beforeAll(async () => {
    cp = await startControlPlane(tmp.path);
    await cp.apply(serviceManifest("payments"), serviceManifest("orders"), serviceManifest("ledger"));
    const tokenFile = join(tmp.path, "admin.token");
    writeFileSync(tokenFile, cp.adminToken);
    admin = ["--admin-url", `http://127.0.0.1:${cp.ports.admin}`, "--admin-token-file", tokenFile];
    certs.payments = await issue("payments");
    certs.orders = await issue("orders");
    certs.otherNsPayments = await issue("payments", "billing");
    certs.ledger = await issue("ledger");
  });

  afterAll(async () => {
    await Promise.all(agents.map((a) => a.stop()));
    if (cp && cp.proc.exitCode === null) {
      cp.proc.kill("SIGKILL");
      await cp.proc.exited;
    }
    tmp.cleanup();
  });

  test("another identity (other service, or the same service name in another namespace) can neither create nor overwrite a service's refusal", async () => {
    expect((await ack(certs.payments, { registration: reg(42_001), error: "genuine refusal" })).status).toBe(200);
    for (const dir of [certs.orders, certs.otherNsPayments]) {
      const forged = await ack(dir, { registration: reg(42_001), error: "forged: all is fine" });
      expect(forged.status).toBe(403);
      const forged2 = await ack(dir, { registration: reg(42_099), error: "forged: all is fine" });
      expect(forged2.status).toBe(403);
    }
    const w = await waiting();
    expect(w.map((p) => [p.endpoint, p.rejected?.reason, p.identity])).toEqual([["127.0.0.1:42001", "genuine refusal", PAYMENTS_ID]]);
  });

  test("an ack without error while unregistered is 410, and leaves nothing behind", async () => {
    const r = await ack(certs.ledger, { registration: { ...reg(42_010), service: "ledger" } });
    expect(r.status).toBe(410);
    expect((await proxies()).filter((p) => p.service === "ledger")).toEqual([]);
  });

  test("the error is capped: over 10,000 characters is refused (400), 10,000 are stored as 2,000", async () => {
    const over = await ack(certs.payments, { registration: reg(42_020), error: "x".repeat(10_001) });
    expect(over.status).toBe(400);
    const at = await ack(certs.payments, { registration: reg(42_020), error: "y".repeat(10_000) });
    expect(at.status).toBe(200);
    const w = await waiting();
    expect(w.length).toBe(1);
    expect(w[0]!.rejected!.reason.length).toBeLessThanOrEqual(2000);
    // Oversized "calls" are refused too.
    const calls = await ack(certs.payments, { registration: reg(42_020), error: "z", calls: Array.from({ length: 1001 }, (_, i) => `s${i}`) });
    expect(calls.status).toBe(400);
  });

  test("registration fields cannot inject into or collide with store keys", async () => {
    for (const address of ["a/b", "../unregistered", "x unregistered", "127.0.0.1/unregistered", ""]) {
      const r = await ack(certs.payments, { registration: reg(42_030, { address }), error: "odd address" });
      expect(r.status).toBe(400);
    }
    for (const bad of [{ service: "payments/unregistered" }, { namespace: "default/payments" }, { port: 0 }, { port: 70_000 }, { port: "80" }]) {
      const r = await ack(certs.payments, { registration: reg(42_030, bad), error: "odd field" });
      expect([400, 403]).toContain(r.status);
    }
    // A hostname literally "unregistered" is a distinct proxy key (…/unregistered:PORT), never the refusal key.
    const registered = await api(certs.payments, "/v1/register", { registration: reg(42_031, { address: "unregistered" }), healthy: true });
    expect(registered.status).toBe(200);
    expect((await ack(certs.payments, { registration: reg(42_032), error: "second instance refused" })).status).toBe(200);
    const items = (await proxies()).filter((p) => p.service === "payments");
    expect(items.find((p) => p.endpoint === "unregistered:42031")?.registered).toBeUndefined();
    expect(items.filter((p) => p.registered === false).map((p) => p.endpoint)).toEqual(["127.0.0.1:42032"]);
  });

  test("a refusal at a registered proxy's address goes on that proxy's status; a registration clears the unregistered record", async () => {
    const r = await api(certs.payments, "/v1/register", { registration: reg(42_040), healthy: true });
    expect(r.status).toBe(200);
    // register() deleted any earlier unregistered record of payments.
    expect(await waiting()).toEqual([]);
    // A refusal by the registered instance stays with it: no unregistered record appears.
    expect((await ack(certs.payments, { registration: reg(42_040), version: "00000000000000aa", error: "refused later" })).status).toBe(200);
    let items = (await proxies()).filter((p) => p.service === "payments");
    const own = items.find((p) => p.endpoint === "127.0.0.1:42040")!;
    expect(own.registered).toBeUndefined();
    expect(own.rejected).toEqual({ version: "00000000000000aa", reason: "refused later" });
    expect(items.filter((p) => p.registered === false)).toEqual([]);
    // Another identity cannot write on the registered proxy's status either.
    expect((await ack(certs.orders, { registration: reg(42_040), error: "forged" })).status).toBe(403);
    items = (await proxies()).filter((p) => p.service === "payments");
    expect(items.find((p) => p.endpoint === "127.0.0.1:42040")!.rejected?.reason).toBe("refused later");
  });

  test("mesh check prints no terminal escapes, and no line a workload forged, from a refusal's reason or version", async () => {
    const reason = "unknown field\n\x1b[32mPASS  proxy default/payments at 127.0.0.1:1 on the latest config\x1b[0m\r\x1b]0;pwned\x07\x1b[2K";
    // A version is a hex content hash: anything else is refused outright.
    expect((await ack(certs.payments, { registration: reg(42_050), version: "v1\n\x1b[1APASS  all good", error: reason })).status).toBe(400);
    const r = await ack(certs.payments, { registration: reg(42_050), error: reason });
    expect(r.status).toBe(200);
    const out = (await mesh("check", ...admin)).out;
    expect(out).toContain("refused its first config");
    // Nothing a workload sent may reach the operator's terminal as control characters…
    // eslint-disable-next-line no-control-regex
    expect(/[\x00-\x08\x0b-\x1f\x7f]/.test(out)).toBe(false);
    // …nor as a line of its own that reads like the check's.
    expect(out.split("\n").some((l) => l.startsWith("PASS  proxy default/payments at 127.0.0.1:1 ") || l.includes("PASS  all good"))).toBe(false);
  });

  test("reports repeated while waiting keep one lease, not one per report (store growth)", async () => {
    const dir = join(tmp.path, "store-unit");
    const store = openSqliteStore(dir);
    try {
      for (let i = 0; i < 50; i++) await recordAck(store, PAYMENTS_ID, reg(42_060), "0123456789abcdef", `refused ${i}`);
      const listed = await store.list("/mesh/proxies/");
      expect(listed.kvs.length).toBe(1);
      const db = (store as unknown as { db: { query(sql: string): { get(): { n: number } } } }).db;
      const leases = db.query("SELECT COUNT(*) AS n FROM leases").get().n;
      // One record per service: it should hold (renew) one lease, not leave 49 empty ones live for 90 s.
      expect(leases).toBeLessThanOrEqual(1);
    } finally {
      await store.close();
    }
  });

  test("a first-config refusal whose reason is over 10,000 characters still reaches the operator", async () => {
    const dir = certs.ledger;
    const wc: WorkloadCerts = await loadWorkloadCerts({ certsDir: dir });
    // An older proxy meeting a field it does not know in each of many documents: one issue per document.
    const long = Array.from({ length: 300 }, (_, i) => `document ${i} spec.retryPolicy: unknown field "perTryTimeout"`).join("; ");
    expect(long.length).toBeGreaterThan(10_000);
    const target: AgentTarget = {
      applyConfig() {
        throw new ConfigRejected(long);
      },
      useCerts() {},
      healthy: async () => true,
    };
    const agent = new ControlPlaneAgent({
      client: new ControlPlaneClient([`https://127.0.0.1:${cp.ports.api}`], wc),
      registration: { namespace: "default", service: "ledger", address: "127.0.0.1", port: 42_070, weight: 1 },
      certs: wc,
      certsDir: dir,
      target,
      log: createLogger({ level: "silent" }),
    });
    agents.push(agent);
    agent.start();
    await within(agent.firstConfig, 10_000, "first config");
    const shown = await eventually(async () => (await waiting("ledger")).length === 1, 6000, 200);
    await agent.stop();
    expect(shown).toBe(true);
  }, 30_000);
});

// ─────────────────────────── B: refusals and WebSockets observed ───────────────────────────

const fx = fixtureFor("orders", "payments");
const ISSUER = "https://issuer.example";

describe("B: requests the proxy answers itself, and WebSockets, observed", () => {
  let collector: Collector;
  let logs: { orders: string; payments: string };
  let ports: { outbound: number; inbound: number; ordersAdmin: number; paymentsAdmin: number };
  let service: ReturnType<typeof Bun.serve>;
  /** The traceparent each handshake / request brought the service, by path. */
  const seen = new Map<string, string | null>();
  let hits = 0;
  let tls: ClientTls;

  beforeAll(async () => {
    collector = otlpCollector();
    service = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      fetch(req, server) {
        const path = new URL(req.url).pathname;
        hits++;
        seen.set(path, req.headers.get("traceparent"));
        if (req.headers.get("upgrade")?.toLowerCase() === "websocket")
          return server.upgrade(req, { data: undefined }) ? undefined : new Response("not a websocket", { status: 400 });
        return Response.json({ path, caller: req.headers.get("x-mesh-client-id") });
      },
      websocket: { message: (ws, m) => void ws.send(m) },
    });
    const policies = `${(await testIssuer(ISSUER)).requestAuthentication("payments")}${denyPaths("payments", ["/admin", "/admin/*"])}`;
    const tracing = tracingFlags(collector);
    logs = { orders: join(fx.tmp.path, "orders.log"), payments: join(fx.tmp.path, "payments.log") };
    const p = await fx.proxy("payments", `http://127.0.0.1:${service.port}`, fx.config("payments", {}, policies), [...tracing, "--access-log", logs.payments]);
    const o = await fx.proxy("orders", fx.echo("orders").url, fx.config("orders", { payments: [p.ports.inbound] }), [...tracing, "--access-log", logs.orders]);
    ports = { outbound: o.ports.outbound, inbound: p.ports.inbound, ordersAdmin: o.ports.admin, paymentsAdmin: p.ports.admin };
    const dir = join(fx.tmp.path, "certs", "orders");
    tls = { cert: readFileSync(join(dir, "chain.pem"), "utf8"), key: readFileSync(join(dir, "key.pem"), "utf8"), ca: readFileSync(join(dir, "bundle.pem"), "utf8") };
  });

  afterAll(() => {
    collector?.stop();
    service?.stop(true);
  });

  const logHas = (file: string, path: string, ms = 3000) => eventually(() => accessLogLines(file).some((l) => l.path === path), ms, 50);
  const spanHas = (svc: string, path: string, ms = 3000) => eventually(() => collector.spans.some((s) => s.service === svc && attr(s.span, "url.path") === path), ms, 50);

  const UPGRADE = (path: string, host: string, extra: string[] = []) =>
    [`GET ${path} HTTP/1.1`, `Host: ${host}`, "Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13", ...extra].join("\r\n") + "\r\n\r\n";

  test('no-route: a client cannot drive the peer label; every unknown Host counts under "unknown"', async () => {
    const hosts = Array.from({ length: 15 }, (_, i) => `evil-${i}-${crypto.randomUUID().slice(0, 8)}`);
    for (const h of hosts) {
      const r = await rawExchange(`GET /card-${h} HTTP/1.1\r\nHost: ${h}\r\nConnection: close\r\n\r\n`, { port: ports.outbound });
      expect(r.statuses[0]).toBe(404);
    }
    for (const h of hosts.slice(0, 5)) expect((await rawUpgrade(ports.outbound, `/ws-card-${h}`, h)).status).toBe(404);
    const text = await (await fetch(`http://127.0.0.1:${ports.ordersAdmin}/metrics`)).text();
    for (const h of hosts) expect(text).not.toContain(h);
    expect(await metricValue(ports.ordersAdmin, "mesh_requests_total", { direction: "outbound", peer: "unknown", status: "4xx" })).toBeGreaterThanOrEqual(15);
    // Upgrades are counted as upgrades only.
    expect(await metricValue(ports.ordersAdmin, "mesh_websocket_upgrades_total", { direction: "outbound", peer: "unknown", status: "4xx" })).toBeGreaterThanOrEqual(5);
    const peers = new Set([...text.matchAll(/^mesh_requests_total\{[^}]*peer="([^"]*)"/gm)].map((m) => m[1]));
    for (const peer of peers) expect(["unknown", "payments"]).toContain(peer!);
  });

  test("a refused WebSocket upgrade is counted only as an upgrade, on either side (raw, loopback, and the caller's)", async () => {
    const reqs = () =>
      Promise.all([
        metricValue(ports.paymentsAdmin, "mesh_requests_total", { direction: "inbound" }),
        metricValue(ports.ordersAdmin, "mesh_requests_total", { direction: "outbound" }),
      ]);
    const ups = () =>
      Promise.all([
        metricValue(ports.paymentsAdmin, "mesh_websocket_upgrades_total", { direction: "inbound" }),
        metricValue(ports.ordersAdmin, "mesh_websocket_upgrades_total", { direction: "outbound" }),
      ]);
    const [r0, u0] = [await reqs(), await ups()];
    // Refused by the deny policy on the raw inbound path; by the token at the inbound loopback server; no route.
    expect((await rawUpgrade(ports.outbound, "/admin/sock", "payments")).status).toBe(403);
    expect((await rawUpgrade(ports.outbound, "/tok-sock", "payments", { authorization: "Bearer not.a.token" })).status).toBe(401);
    expect((await rawUpgrade(ports.outbound, "/nr-sock", "ledger")).status).toBe(404);
    await Bun.sleep(200);
    expect(await reqs()).toEqual(r0);
    const u1 = await ups();
    expect(u1[0] - u0[0]).toBe(2);
    expect(u1[1] - u0[1]).toBe(3);
    // One line each, not two.
    for (const [file, path] of [[logs.payments, "/admin/sock"], [logs.payments, "/tok-sock"], [logs.orders, "/admin/sock"], [logs.orders, "/nr-sock"]] as const) {
      expect(await logHas(file, path)).toBe(true);
      expect(accessLogLines(file).filter((l) => l.path === path).length).toBe(1);
    }
  });

  test("access-log lines stay one JSON line each, whatever the path, Host or x-request-id holds", async () => {
    const nasty = [
      ['/inj-1"}\\n{"x":1', 'id-"\\\u00e9\u00ff'],
      ["/inj-2/%0d%0a%1b%5b31m?q=%22%0a", "id\ttab"],
    ];
    for (const [path, id] of nasty) {
      const bytes = Buffer.from(`GET ${path} HTTP/1.1\r\nHost: payments\r\nx-request-id: ${id}\r\nConnection: close\r\n\r\n`, "latin1");
      await rawExchange(bytes, { port: ports.outbound });
      await rawExchange(bytes.toString("latin1").replace("Host: payments", 'Host: nowhere"}{'), { port: ports.outbound });
    }
    // An upgrade through the loopback server, with the same kind of values.
    await rawExchange(UPGRADE('/inj-ws"\\', "payments", ['x-request-id: "}\n{"a":1']), { port: ports.outbound, timeoutMs: 1500 });
    await Bun.sleep(1500);
    for (const file of [logs.orders, logs.payments]) {
      const raw = readFileSync(file, "utf8");
      // eslint-disable-next-line no-control-regex
      expect(/[\x00-\x09\x0b-\x1f]/.test(raw)).toBe(false);
      for (const line of raw.split("\n").filter(Boolean)) expect(() => JSON.parse(line)).not.toThrow();
    }
  });

  test("a client's traceparent on an upgrade is continued only when valid; the service gets the sidecar's span", async () => {
    const traceId = "ab".repeat(16);
    const parent = "cd".repeat(8);
    const cases = [
      { path: "/tp-valid", tp: [`traceparent: 00-${traceId}-${parent}-01`], continued: true },
      { path: "/tp-zero", tp: [`traceparent: 00-${"0".repeat(32)}-${parent}-01`], continued: false },
      { path: "/tp-junk", tp: [`traceparent: 00-${traceId.toUpperCase()}-${parent}-01`], continued: false },
      { path: "/tp-twice", tp: [`traceparent: 00-${traceId}-${parent}-01`, `traceparent: 00-${"ef".repeat(16)}-${parent}-01`], continued: false },
    ];
    for (const c of cases) {
      const r = await rawExchange(UPGRADE(c.path, "payments", c.tp), { port: ports.outbound, timeoutMs: 1500 });
      expect(r.statuses[0]).toBe(101);
    }
    for (const c of cases) {
      const client = await collector.spanFor("orders", c.path);
      const server = await collector.spanFor("payments", c.path);
      if (c.continued) expect([client.traceId, client.parentSpanId]).toEqual([traceId, parent]);
      else {
        expect(client.traceId).not.toBe(traceId);
        expect(client.traceId).not.toBe("0".repeat(32));
        expect(client.parentSpanId).toBeUndefined();
      }
      expect([server.traceId, server.parentSpanId]).toEqual([client.traceId, client.spanId]);
      const handed = parseTraceParent(seen.get(c.path) ?? "");
      expect([handed?.traceId, handed?.parentId]).toEqual([server.traceId, server.spanId]);
    }
  });

  test("an upgrade refused at the inbound's loopback server closes its connection: nothing behind it reaches the service unlogged", async () => {
    const before = hits;
    // orders' certificate, straight to payments' mTLS inbound: the upgrade passes the raw path
    // (with a RequestAuthentication only the path is checked there) and is refused by the loopback server.
    for (const behind of ["GET /lb-after HTTP/1.1\r\nHost: payments\r\nConnection: close\r\n\r\n", "GET /admin/lb-denied HTTP/1.1\r\nHost: payments\r\nConnection: close\r\n\r\n"]) {
      const r = await rawExchange(UPGRADE("/lb-upgrade", "payments", ["Authorization: Bearer not.a.token"]), { port: ports.inbound, tls, timeoutMs: 4000, quietMs: 1500, thenWrite: { afterMs: 300, bytes: behind } });
      expect(r.statuses).toEqual([401]);
      expect(r.closed).toBe(true);
    }
    expect(hits).toBe(before);
    expect(await logHas(logs.payments, "/lb-upgrade")).toBe(true);
    expect(await spanHas("payments", "/lb-upgrade")).toBe(true);
  });

  test("an upgrade refused at the outbound's loopback server (no route) closes its connection: no call rides it", async () => {
    const before = hits;
    const r = await rawExchange(UPGRADE("/ob-upgrade", "ledger"), {
      port: ports.outbound,
      timeoutMs: 4000,
      quietMs: 1500,
      thenWrite: { afterMs: 300, bytes: "GET /ob-after HTTP/1.1\r\nHost: payments\r\nConnection: close\r\n\r\n" },
    });
    expect(r.statuses).toEqual([404]);
    expect(r.closed).toBe(true);
    expect(hits).toBe(before);
    expect(await logHas(logs.orders, "/ob-upgrade")).toBe(true);
  });

  test("a WebSocket open when its sidecar drains still gets its line (status 101) before the process exits", async () => {
    const log = join(fx.tmp.path, "drainer.log");
    const drainer = await fx.proxy("orders", fx.echo("orders-2").url, fx.config("orders-drain", { payments: [ports.inbound] }), ["--access-log", log, "--drain-timeout", "3s"]);
    const c = new WsClient(`ws://127.0.0.1:${drainer.ports.outbound}/drain-sock`, { headers: { host: "payments" } });
    expect(await within(c.opened, 10_000, "open")).toBe(true);
    c.ws.send("hi");
    expect(String(await c.next())).toBe("hi");
    drainer.proc.kill("SIGTERM");
    await within(drainer.proc.exited, 10_000, "drainer exit");
    await c.closedWithin().catch(() => undefined);
    const lines = accessLogLines(log).filter((l) => l.path === "/drain-sock");
    expect(lines.map((l) => [l.status, l.direction])).toEqual([[101, "outbound"]]);
    // The callee's sidecar writes its line when the session ends there too.
    expect(await logHas(logs.payments, "/drain-sock", 5000)).toBe(true);
  }, 30_000);
});
