/**
 * Review of the sidecar's resilience features, attacked as a misbehaving service, a
 * greedy caller and an SRE checking that what the metrics say is what happened.
 *
 * Topology (all on 127.0.0.1, real `mesh proxy` processes with certificates from a test CA):
 *
 *   test client ──> orders' sidecar (outbound) ──mTLS──> payments' sidecar ──> payments service
 *                          │                                   └─(outbound)──mTLS──> ledger's sidecar ──> ledger (always 503)
 *                          ├──mTLS──> web's sidecar (RateLimitPolicy, scope: service) ──> web
 *                          └──plain HTTP──> Services outside the mesh (mtls: false), one per attack,
 *                                           each with its own DestinationPolicy: bh, alt, stream,
 *                                           conn, pend, storm, slowej, trickle, stall, long, stall2 (h2c)
 *
 * What was attacked, and what must hold:
 *  - Balancing and outlier detection against one bad endpoint of several: an endpoint that
 *    fails instantly under ewma (the "fast failure attracts all traffic" black hole) must be
 *    ejected after consecutiveFailures and cost callers nothing (retries); one that is slow
 *    instead of failing must be ejected through its per-try timeouts; one that alternates
 *    success and failure evades consecutive-failure ejection (judged acceptable below).
 *  - Amplification: the callee's sidecar must add no tries of its own (one hop: exactly
 *    1 + attempts tries); the retry budget must bound retries in a storm; and a try given up
 *    (per-try timeout) must stop the work at the service, not leave it piling up.
 *  - Shared state: the breaker's maxRequests must count a request until it is over (its
 *    response body included: HTTP/2 does, HTTP/1.1 does not), maxConnections must bound
 *    the connections to the service (README: "Most open connections to the service"), a
 *    full pending queue must answer 503 naming max-pending-requests; a RateLimitPolicy's
 *    buckets must not be refilled by config pushes or instance counts changing.
 *  - Timeouts: a request body that trickles must be cut by the request timeout (504); a
 *    response body that stalls must not hold the caller forever.
 *  - Consistency: mesh_retries_total equals the extra tries the services saw; an overflow
 *    is counted and logged as the 503 it was.
 *
 * Judged acceptable (tests that pass, documenting the behaviour):
 *  - Outlier detection is consecutive-failure only: an endpoint failing every other
 *    request is never ejected. Istio configures Envoy so (consecutive_5xx, no success-rate
 *    ejection by default) and Linkerd's default failure accrual is consecutive too;
 *    callers are shielded by retries, within the budget.
 *  - ewma records the latency of a 5xx like any other: a fast-failing endpoint is
 *    preferred until outlier detection ejects it (5 tries). Linkerd's peak-EWMA does the
 *    same and relies on failure accrual; the peak estimate keeps an endpoint whose
 *    successes are slow from looking fast.
 *  - Retries multiply across hops: (1 + attempts)^hops tries at the last service. Envoy,
 *    Istio and Linkerd retry per hop as well; each hop's budget bounds its own share.
 *  - A response body that keeps trickling past the request timeout is relayed whole: the
 *    timeout is documented as "until the response headers arrive" (streams must live).
 *  - The breaker is per destination, shared by every request of the sidecar (as Envoy's):
 *    a sidecar fronts one service, so "one caller exhausting it" is the service itself.
 *  - The per-caller buckets are forgotten all at once past 10,000 caller identities;
 *    identities come from certificates of the mesh CA, so a caller cannot mint them.
 *    Not exercised here (10,000 certificates).
 *
 * Three faults this review found: maxRequests (and the balancer's in-flight count) let an
 * HTTP/1.1 request go at its response head, so streamed or stalled bodies were free;
 * nothing bounded an HTTP/1.1 response body that stalled after its head; and
 * maxConnections bounds each endpoint's HTTP pool, not the service, as Envoy's does. The
 * first two are fixed (their tests here); the third is documented as it is.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync, writeFileSync } from "node:fs";
import http2 from "node:http2";
import { join } from "node:path";
import { fixtureFor, metricValue } from "../helpers/mesh-fixture.ts";
import { eventually } from "../helpers/wait.ts";

const fx = fixtureFor("orders", "payments", "ledger", "web");

/** A service on loopback that counts what it gets: hits, requests running at once, requests its caller gave up. */
interface Counted {
  port: number;
  hits: number;
  active: number;
  maxActive: number;
  aborted: number;
  paths: string[];
}
const servers: ReturnType<typeof Bun.serve>[] = [];
const h2Servers: http2.Http2Server[] = [];
/** Shared "running at once" count, for services that make one group (conn's endpoints). */
const group = { active: 0, maxActive: 0 };

function counted(handler: (req: Request, self: Counted) => Response | Promise<Response>, shared?: typeof group): Counted {
  const c: Counted = { port: 0, hits: 0, active: 0, maxActive: 0, aborted: 0, paths: [] };
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    idleTimeout: 30,
    async fetch(req) {
      c.hits++;
      c.paths.push(new URL(req.url).pathname);
      c.active++;
      c.maxActive = Math.max(c.maxActive, c.active);
      if (shared) {
        shared.active++;
        shared.maxActive = Math.max(shared.maxActive, shared.active);
      }
      req.signal.addEventListener("abort", () => c.aborted++);
      try {
        return await handler(req, c);
      } finally {
        c.active--;
        if (shared) shared.active--;
      }
    },
  });
  servers.push(server);
  c.port = server.port!;
  return c;
}

/** Waits `ms`, or less if the request is aborted first; true if aborted. */
function hold(req: Request, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    if (req.signal.aborted) return resolve(true);
    const t = setTimeout(() => resolve(false), ms);
    req.signal.addEventListener("abort", () => (clearTimeout(t), resolve(true)));
  });
}

const outside = (name: string, ports: number[], policy: string, protocol = "") => `---
apiVersion: mesh.dev/v1alpha1
kind: Service
metadata: { name: ${name} }
spec:
  mtls: false
  ports: [{ name: http, port: 80${protocol} }]
  endpoints: [${ports.map((p) => `{ address: 127.0.0.1, port: ${p} }`).join(", ")}]
---
apiVersion: mesh.dev/v1alpha1
kind: DestinationPolicy
metadata: { name: ${name} }
spec:
${policy}`;

const meshService = (name: string, ports: number[], extra = "") => `---
apiVersion: mesh.dev/v1alpha1
kind: Service
metadata: { name: ${name} }
spec:
  ports: [{ name: http, port: 80 }]
${extra}  endpoints: [${ports.map((p) => `{ address: 127.0.0.1, port: ${p} }`).join(", ")}]
`;

// Services outside the mesh, one group per attack.
const fastFail = () => counted(() => new Response("down", { status: 503 }));
const healthy = (ms: number) => counted(async (req) => (await hold(req, ms), new Response("ok")));
let bh: { bad: Counted; good: Counted[] };
let alt: { bad: Counted; good: Counted[] };
let release: () => void = () => {};
const released = new Promise<void>((r) => (release = r));
let streamSvc: Counted;
let conn: Counted[];
let pend: Counted;
let storm: Counted[];
let slowej: { slow: Counted; fast: Counted };
let trickleSeen: { bodyEnded: "pending" | "complete" | "error" };
let trickleSvc: Counted;
let stallSvc: Counted;
let longSvc: Counted;

// Mesh services.
let payments: Counted;
let ledger: Counted;
let web: Counted;
let ports: { orders: number; ordersAdmin: number; paymentsAdmin: number; webAdmin: number; paymentsOutbound: number; webInbound: number };
let accessLogPath: string;
let webConfig: string;

beforeAll(async () => {
  bh = { bad: fastFail(), good: [healthy(30), healthy(30)] };
  let altCount = 0;
  alt = {
    // Fails every other request it gets, at once; its successes are as slow as the others'.
    bad: counted(async (req) => (altCount++ % 2 === 0 ? new Response("down", { status: 503 }) : (await hold(req, 30), new Response("ok")))),
    good: [healthy(30), healthy(30)],
  };
  streamSvc = counted(
    () =>
      new Response(
        new ReadableStream({
          async start(c) {
            c.enqueue(new TextEncoder().encode("first"));
            await Promise.race([released, Bun.sleep(8000)]);
            c.enqueue(new TextEncoder().encode("-rest"));
            c.close();
          },
        }),
      ),
  );
  conn = [0, 1, 2].map(() => counted(async (req) => (await hold(req, 500), new Response("ok")), group));
  pend = counted(async (req) => (await hold(req, 1200), new Response("ok")));
  storm = [fastFail(), fastFail()];
  slowej = { slow: counted(async (req) => (await hold(req, 5000), new Response("slow"))), fast: counted(() => new Response("fast")) };
  trickleSeen = { bodyEnded: "pending" };
  trickleSvc = counted(async (req) => {
    try {
      await req.arrayBuffer();
      trickleSeen.bodyEnded = "complete";
    } catch {
      trickleSeen.bodyEnded = "error";
    }
    return new Response("got it");
  });
  // Head and one chunk, then nothing for 6 s (bounded: the test waits 4 s at most).
  stallSvc = counted(
    () =>
      new Response(
        new ReadableStream({
          async start(c) {
            c.enqueue(new TextEncoder().encode("head-and-a-bit"));
            await Bun.sleep(6000);
            c.close();
          },
        }),
      ),
  );
  // Five chunks 150 ms apart: a body that outlives a 300 ms request timeout.
  longSvc = counted(
    () =>
      new Response(
        new ReadableStream({
          async start(c) {
            for (let i = 0; i < 5; i++) {
              c.enqueue(new TextEncoder().encode(`chunk${i};`));
              await Bun.sleep(150);
            }
            c.close();
          },
        }),
      ),
  );

  // The same stall over h2c: head and a chunk, then nothing for 6 s.
  const h2 = http2.createServer((_req, res) => {
    res.writeHead(200);
    res.write("head-and-a-bit");
    const t = setTimeout(() => res.end(), 6000);
    res.on("close", () => clearTimeout(t));
  });
  h2Servers.push(h2);
  const stallH2Port = await new Promise<number>((resolve) => h2.listen(0, "127.0.0.1", () => resolve((h2.address() as { port: number }).port)));

  ledger = counted(() => new Response("ledger down", { status: 503 }));
  web = counted(() => new Response("web ok"));
  let paymentsOutbound = 0;
  payments = counted(async (req) => {
    const path = new URL(req.url).pathname;
    if (path === "/hop") {
      // payments calls ledger through its own sidecar and passes its status on.
      const res = await fetch(`http://127.0.0.1:${paymentsOutbound}/entry`, { headers: { host: "ledger" } });
      await res.arrayBuffer();
      return new Response("from ledger", { status: res.status });
    }
    if (path === "/slow") return (await hold(req, 5000), new Response("late"));
    return new Response("payments ok");
  });

  const ledgerP = await fx.proxy("ledger", `http://127.0.0.1:${ledger.port}`);
  const paymentsP = await fx.proxy("payments", `http://127.0.0.1:${payments.port}`, writeDocs("payments", [meshService("ledger", [ledgerP.ports.inbound])]));
  paymentsOutbound = paymentsP.ports.outbound;
  // web's own Service lists two instances (its inbound and one elsewhere): scope service gives it half.
  webConfig = join(fx.tmp.path, "web.yaml");
  const webP = await fx.proxy("web", `http://127.0.0.1:${web.port}`, writeDocs("web", [webDocs([1, 2])]));
  // The file above was written before the inbound port was known; rewrite it with the real one now.
  ports = { orders: 0, ordersAdmin: 0, paymentsAdmin: paymentsP.ports.admin, webAdmin: webP.ports.admin, paymentsOutbound, webInbound: webP.ports.inbound };
  writeFileSync(webConfig, webDocs([webP.ports.inbound, 1]) + "\n");
  expect(await eventually(async () => (await webDump()).instances === 2, 5000)).toBe(true);

  accessLogPath = join(fx.tmp.path, "orders-access.log");
  const ordersDocs = [
    meshService("payments", [paymentsP.ports.inbound]),
    // The same sidecar under another name, with a per-try timeout of its own.
    meshService("pslow", [paymentsP.ports.inbound], "  identity: payments\n") +
      `---
apiVersion: mesh.dev/v1alpha1
kind: DestinationPolicy
metadata: { name: pslow }
spec:
  timeouts: { request: 4s, perTry: 200ms }
  retries: { attempts: 2, backoff: { base: 5ms, max: 10ms } }
`,
    meshService("web", [webP.ports.inbound]),
    outside("bh", [bh.bad.port, ...bh.good.map((g) => g.port)], "  loadBalancer: { type: ewma }\n  retries: { backoff: { base: 1ms, max: 2ms } }\n"),
    outside("alt", [alt.bad.port, ...alt.good.map((g) => g.port)], "  loadBalancer: { type: ewma }\n  retries: { backoff: { base: 1ms, max: 2ms } }\n"),
    outside("stream", [streamSvc.port], "  circuitBreaker: { maxRequests: 2 }\n  retries: { attempts: 0 }\n"),
    outside("conn", conn.map((c) => c.port), "  circuitBreaker: { maxConnections: 1 }\n  retries: { attempts: 0 }\n  multiplex: false\n"),
    outside("pend", [pend.port], "  circuitBreaker: { maxConnections: 1, maxPendingRequests: 1 }\n  retries: { attempts: 0 }\n"),
    outside(
      "storm",
      storm.map((s) => s.port),
      "  outlierDetection: { consecutiveFailures: 1000 }\n  retries: { attempts: 2, backoff: { base: 1ms, max: 2ms }, budget: { percent: 0, minPerSecond: 1 } }\n",
    ),
    outside(
      "slowej",
      [slowej.slow.port, slowej.fast.port],
      "  loadBalancer: { type: round-robin }\n  timeouts: { request: 5s, perTry: 150ms }\n  retries: { attempts: 2, backoff: { base: 1ms, max: 2ms } }\n  outlierDetection: { consecutiveFailures: 3 }\n",
    ),
    outside("trickle", [trickleSvc.port], "  timeouts: { request: 800ms }\n  retries: { attempts: 0 }\n"),
    outside("stall", [stallSvc.port], "  timeouts: { request: 500ms }\n  retries: { attempts: 0 }\n"),
    outside("stall2", [stallH2Port], "  timeouts: { request: 500ms }\n  retries: { attempts: 0 }\n", ", protocol: http2"),
    outside("long", [longSvc.port], "  timeouts: { request: 300ms }\n  retries: { attempts: 0 }\n"),
  ];
  const orders = await fx.proxy("orders", `http://127.0.0.1:${healthy(0).port}`, writeDocs("orders", ordersDocs), ["--access-log", accessLogPath, "--stream-idle-timeout", "1s"]);
  ports.orders = orders.ports.outbound;
  ports.ordersAdmin = orders.ports.admin;
}, 60_000);

afterAll(() => {
  release();
  for (const s of servers) s.stop(true);
  for (const s of h2Servers) s.close();
});

/** Writes documents that each begin with "---" as one config file; its path. */
function writeDocs(name: string, docs: string[]): string {
  const path = join(fx.tmp.path, `${name}.yaml`);
  writeFileSync(path, docs.join("\n") + "\n");
  return path;
}

function webDocs(endpointPorts: number[], extra = ""): string {
  return (
    meshService("web", endpointPorts) +
    `---
apiVersion: mesh.dev/v1alpha1
kind: RateLimitPolicy
metadata: { name: web }
spec:
  scope: service
  total: { requestsPerSecond: 0.01, burst: 4 }
` +
    extra
  );
}

async function webDump(): Promise<{ instances?: number }> {
  const dump = (await (await fetch(`http://127.0.0.1:${ports.webAdmin}/config_dump`)).json()) as { rateLimit?: { instances?: number } };
  return dump.rateLimit ?? {};
}

/** One GET through orders' sidecar; status, overflow reason and body. */
async function call(host: string, path = "/", timeoutMs = 10_000) {
  const res = await fetch(`http://127.0.0.1:${ports.orders}${path}`, { headers: { host }, signal: AbortSignal.timeout(timeoutMs) });
  const body = await res.text();
  return { status: res.status, overflow: res.headers.get("x-mesh-overflow"), error: res.headers.get("x-mesh-error"), body };
}

const retries = (peer: string) => metricValue(ports.ordersAdmin, "mesh_retries_total", { peer });
const ejections = (peer: string) => metricValue(ports.ordersAdmin, "mesh_outlier_ejections_total", { peer });

describe("a misbehaving endpoint among healthy ones", () => {
  test("ewma, an endpoint answering 503 at once: preferred for its speed only until ejected after 5 failures in a row; every call answered 200", async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 40; i++) statuses.push((await call("bh")).status);
    expect(statuses.every((s) => s === 200)).toBe(true);
    // Exactly consecutiveFailures tries reached it, then it was out for 30 s.
    expect(bh.bad.hits).toBe(5);
    expect(await ejections("bh")).toBe(1);
    expect(bh.good[0]!.hits + bh.good[1]!.hits).toBe(40);
    // Every failed try was retried once, and counted so.
    expect(await retries("bh")).toBe(5);
  });

  test("acceptable: an endpoint failing every other request is never ejected (consecutive failures only), callers get 200 through retries, and it takes no more than its share", async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 45; i++) statuses.push((await call("alt")).status);
    expect(statuses.every((s) => s === 200)).toBe(true);
    expect(await ejections("alt")).toBe(0);
    const tries = alt.bad.hits + alt.good[0]!.hits + alt.good[1]!.hits;
    // 45 calls, plus one retry per failure of the bad endpoint: the metric says exactly that.
    expect(await retries("alt")).toBe(tries - 45);
    expect(tries - 45).toBe(Math.ceil(alt.bad.hits / 2));
    // Peak EWMA keeps its slow successes in its estimate: no black hole (fair share is 1/3 of tries).
    expect(alt.bad.hits).toBeLessThanOrEqual(Math.ceil(tries * 0.6));
  });

  test("slow instead of failing: its per-try timeouts count as failures, so it is ejected after 3; each given-up try is cancelled at the service", async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 12; i++) statuses.push((await call("slowej")).status);
    expect(statuses.every((s) => s === 200)).toBe(true);
    expect(slowej.slow.hits).toBe(3);
    expect(await ejections("slowej")).toBe(1);
    expect(await retries("slowej")).toBe(3);
    expect(await eventually(() => slowej.slow.aborted === 3 && slowej.slow.active === 0, 3000)).toBe(true);
  });
});

describe("amplification", () => {
  test("two hops, the last service always 503: payments tried 1 + 2 times, ledger (1 + 2)² = 9; neither callee's inbound adds a try", async () => {
    const before = { payments: payments.hits, ledger: ledger.hits };
    const r = await call("payments", "/hop");
    expect(r.status).toBe(503);
    expect(payments.hits - before.payments).toBe(3);
    expect(ledger.hits - before.ledger).toBe(9);
    expect(await retries("payments")).toBe(2);
    expect(await metricValue(ports.paymentsAdmin, "mesh_retries_total", { peer: "ledger" })).toBe(6);
  });

  test("a retry storm over HTTP/1.1 (every try 503, budget percent 0, minPerSecond 1): at most 10 retries in the 10 s window; the metric equals the extra tries", async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 30; i++) statuses.push((await call("storm")).status);
    expect(statuses.every((s) => s === 503)).toBe(true);
    const tries = storm[0]!.hits + storm[1]!.hits;
    expect(tries - 30).toBeLessThanOrEqual(10);
    expect(await retries("storm")).toBe(tries - 30);
  });

  test("per-try timeouts against a slow service (one endpoint, 3 tries): each given-up try is cancelled at the service, none left running", async () => {
    const before = { hits: payments.hits, aborted: payments.aborted };
    const r = await call("pslow", "/slow");
    expect(r.status).toBe(504);
    expect(payments.hits - before.hits).toBe(3);
    // The service's requests are all stopped within a moment, not left to run their 5 s.
    expect(await eventually(() => payments.aborted - before.aborted === 3, 3000)).toBe(true);
  });
});

describe("the breaker", () => {
  test("maxRequests (2) counts HTTP/1.1 requests until they are over: with two responses still streaming, a third call is refused 503 max-requests", async () => {
    const open: Response[] = [];
    const results: { status: number; overflow: string | null }[] = [];
    try {
      for (let i = 0; i < 4; i++) {
        const res = await fetch(`http://127.0.0.1:${ports.orders}/s${i}`, { headers: { host: "stream" }, signal: AbortSignal.timeout(10_000) });
        results.push({ status: res.status, overflow: res.headers.get("x-mesh-overflow") });
        open.push(res);
      }
    } finally {
      release();
      await Promise.all(open.map((r) => r.text().catch(() => "")));
    }
    // Two in flight (their bodies still coming), so the third and fourth must overflow.
    expect(results).toEqual([
      { status: 200, overflow: null },
      { status: 200, overflow: null },
      { status: 503, overflow: "max-requests" },
      { status: 503, overflow: "max-requests" },
    ]);
  });

  // Envoy's max_connections bounds the whole cluster; mesh's bounds each endpoint's HTTP pool (as documented
  // now), and the service's TCP and WebSocket connections together. A service-wide HTTP bound is future work.
  test("maxConnections (1) bounds the HTTP connections to each endpoint: with 3 endpoints, at most 3 requests at the service at once", async () => {
    const results = await Promise.all([0, 1, 2, 3, 4, 5].map((i) => call("conn", `/c${i}`)));
    expect(results.map((r) => r.status)).toEqual([200, 200, 200, 200, 200, 200]);
    expect(group.maxActive).toBeLessThanOrEqual(3);
  });

  test("a full pending queue: 503 naming max-pending-requests, the service never sees it; counted 5xx and as an overflow, logged 503 with its cause", async () => {
    const before5xx = await metricValue(ports.ordersAdmin, "mesh_requests_total", { direction: "outbound", peer: "pend", status: "5xx" });
    const overflow = { direction: "outbound", peer: "pend", error: "overflow", limit: "max-pending-requests" };
    const beforeOverflows = await metricValue(ports.ordersAdmin, "mesh_local_replies_total", overflow);
    const first = call("pend", "/p1");
    expect(await eventually(() => pend.active === 1, 5000)).toBe(true);
    const second = call("pend", "/p2");
    await Bun.sleep(300); // the second waits for the only connection
    const third = await call("pend", "/p3");
    expect(third.status).toBe(503);
    expect(third.overflow).toBe("max-pending-requests");
    expect((await first).status).toBe(200);
    expect((await second).status).toBe(200);
    expect(pend.paths.includes("/p3")).toBe(false);
    expect(await metricValue(ports.ordersAdmin, "mesh_requests_total", { direction: "outbound", peer: "pend", status: "5xx" })).toBe(before5xx + 1);
    expect(await metricValue(ports.ordersAdmin, "mesh_local_replies_total", overflow)).toBe(beforeOverflows + 1);
    const logged = await eventually(() => readFileSync(accessLogPath, "utf8").includes('"path":"/p3"'), 5000);
    expect(logged).toBe(true);
    const line = readFileSync(accessLogPath, "utf8")
      .split("\n")
      .find((l) => l.includes('"path":"/p3"'))!;
    expect(JSON.parse(line)).toMatchObject({ direction: "outbound", status: 503, peer: "pend", mesh_error: "overflow", mesh_overflow: "max-pending-requests" });
  });
});

describe("timeouts", () => {
  test("a request body trickling one byte per 200 ms under a request timeout of 800 ms: 504 within 4 s, the service's read cut", async () => {
    const started = Date.now();
    let response = "";
    const socket = await Bun.connect({
      hostname: "127.0.0.1",
      port: ports.orders,
      socket: {
        data(_s, chunk) {
          response += chunk.toString();
        },
      },
    });
    socket.write("POST /up HTTP/1.1\r\nHost: trickle\r\nContent-Length: 100\r\n\r\n");
    for (let i = 0; i < 40 && !response.includes("\r\n\r\n") && Date.now() - started < 8000; i++) {
      socket.write("x");
      await Bun.sleep(200);
    }
    socket.end();
    expect(response.split("\r\n")[0]).toBe("HTTP/1.1 504 Gateway Timeout");
    expect(Date.now() - started).toBeLessThan(4000);
    expect(await eventually(() => trickleSeen.bodyEnded === "error", 3000)).toBe(true);
  });

  test("acceptable: a response body that outlives the request timeout (head at once, 5 chunks over 750 ms, timeout 300 ms) is relayed whole, as documented", async () => {
    const r = await call("long");
    expect(r.status).toBe(200);
    expect(r.body).toBe("chunk0;chunk1;chunk2;chunk3;chunk4;");
  });

  test("an HTTP/1.1 response that stalls after its head is not held forever: with --stream-idle-timeout 1s the caller's response ends (cut) within 4 s", async () => {
    const started = Date.now();
    const res = await fetch(`http://127.0.0.1:${ports.orders}/`, { headers: { host: "stall" }, signal: AbortSignal.timeout(4000) });
    expect(res.status).toBe(200);
    const outcome = await res.text().then(
      () => "ended",
      (e: Error) => (e.name === "TimeoutError" || e.name === "AbortError" ? "still-open-after-4s" : "cut"),
    );
    // Cut by the sidecar (an error on the body), well before the service's 6 s stall ends.
    expect(outcome).toBe("cut");
    expect(Date.now() - started).toBeLessThan(4000);
  });

  test("the same stall from an h2c service to an HTTP/2 caller: its stream is reset after --stream-idle-timeout (1 s), within 4 s", async () => {
    const started = Date.now();
    const session = http2.connect(`http://127.0.0.1:${ports.orders}`);
    try {
      const outcome = await new Promise<{ status: number; ended: string }>((resolve) => {
        let status = 0;
        const stream = session.request({ ":method": "GET", ":path": "/", ":authority": "stall2" });
        const timer = setTimeout(() => resolve({ status, ended: "still-open-after-4s" }), 4000);
        stream.on("response", (h) => (status = Number(h[":status"])));
        stream.on("data", () => {});
        stream.on("error", () => {});
        stream.on("close", () => (clearTimeout(timer), resolve({ status, ended: stream.rstCode ? "reset" : "ended" })));
      });
      expect(outcome).toEqual({ status: 200, ended: "reset" });
      expect(Date.now() - started).toBeLessThan(4000);
    } finally {
      session.destroy();
    }
  });
});

describe("rate limits", () => {
  test("scope: service, burst 4 over 2 instances (2 here): emptied, then an instance leaves and an unrelated config change comes: still empty, nothing refilled", async () => {
    const webCall = async () => (await call("web", "/rl")).status;
    const first = [await webCall(), await webCall(), await webCall()];
    expect(first).toEqual([200, 200, 429]);
    // One instance left: the share becomes the whole burst (4), as full as the bucket was (empty).
    writeFileSync(webConfig, webDocs([ports.webInbound]) + "\n");
    expect(await eventually(async () => (await webDump()).instances === 1, 5000)).toBe(true);
    expect(await webCall()).toBe(429);
    // An unrelated change (another Service) with the same policy keeps the buckets.
    writeFileSync(webConfig, webDocs([ports.webInbound], meshService("other", [1])) + "\n");
    expect(await eventually(async () => (await (await fetch(`http://127.0.0.1:${ports.webAdmin}/config_dump`)).text()).includes('"other"'), 5000)).toBe(true);
    expect(await webCall()).toBe(429);
    expect(web.paths.filter((p) => p === "/rl").length).toBe(2);
    expect(await metricValue(ports.webAdmin, "mesh_rate_limited_total", { limit: "total" })).toBe(3);
  });
});
