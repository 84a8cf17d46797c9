/**
 * Review of the sidecar's observability, as an attacker and as the SRE who runs it.
 *
 * What was attacked: everything a caller controls that reaches the metrics, the access log,
 * the spans and the status/admin listeners.
 *  - Metric label cardinality: distinct paths, Hosts (unknown destinations), methods and
 *    header values through the outbound; distinct SNI names and untrusted client
 *    certificates at the inbound; distinct gRPC statuses a service answers with.
 *  - Exposition: every /metrics body after the attacks (label values with `"`, `\` and
 *    non-ASCII included) checked by a strict text-format 0.0.4 checker written here
 *    (names, label syntax, escapes, value syntax, TYPE before samples, no duplicate series)
 *    and by Prometheus's own `promtool check metrics` when it is installed (Debian's
 *    `prometheus` package; lint advice ignored, parse errors fail).
 *  - Access log: ESC/ANSI sequences, obs-text (invalid UTF-8 as sent), quotes, 8 KiB
 *    values, CR/LF/NUL in header values and the request target; secrets in Authorization,
 *    Cookie and Proxy-Authorization.
 *  - Trace context: traceparent with version ff, all-zero ids, upper case, repeated,
 *    oversized and garbage; tracestate with 40 members / over 512 chars, and alone or with
 *    a broken traceparent; a caller forcing sampling; spans queued while the collector
 *    stalls (a real loopback HTTP server that never answers); what a span says of a gRPC
 *    status.
 *  - Status/admin listeners: what each serves, what /config_dump shows, the admin bound
 *    elsewhere than loopback, and 200 slow (slowloris) connections to the status listener.
 *
 * Topology (all loopback, real `mesh proxy` processes from src/main.ts, nothing mocked):
 *   client ─h1/h2c─▶ orders sidecar (outbound; --status; access log; traces) ─mTLS─▶
 *     payments sidecar (inbound; --status; access log; traces) ─▶ recording HTTP/1 service
 *     greeter sidecar (inbound; traces) ─▶ an h2c "gRPC" service answering the status asked
 *   a second orders sidecar exports to a stalled collector at 100% sampling.
 *   Traces of the first three go to a loopback OTLP/HTTP JSON collector.
 *
 * What must hold: a caller cannot mint metric series (memory of the sidecar and of
 * Prometheus stays bounded whatever it sends); /metrics always parses; each access-log
 * line is one JSON object, of bounded size, holding no raw control byte, only valid UTF-8
 * and no credential header; a bad trace context never crashes, never propagates garbage
 * and never ties a stranger's tracestate to a new trace; what a span exports is valid
 * OTLP; what waits for a collector is bounded in memory, not only in count; the status
 * listener shows nothing secret, and flooding it stops neither the data path nor the admin.
 *
 * Judged acceptable (and why):
 *  - A caller's sampled flag is followed (it forces export at --trace-sampling 0): W3C Trace
 *    Context and Envoy/Istio do the same, it is documented, and the queue is bounded.
 *  - tracestate that comes with a valid traceparent is passed on untouched, even at 40
 *    members and over 512 chars: the spec lets a hop that does not read it forward it; it is
 *    bounded by the 16 KiB head limit.
 *  - The access log records the query (tokens in URLs included): Envoy's and Istio's default
 *    formats and nginx's combined format do too; the log is opt-in and created 0640. Spans
 *    drop it. (Noted in the report, not asserted as a fault.)
 *  - Peer labels of inbound callers come from CA-signed SPIFFE IDs (bounded by what the CA
 *    issues) and outbound ones from configured Services, unknown names collapsing to
 *    "unknown", as Istio's and Linkerd's do.
 *  - 64 connections can hold the status listener (its own cap), which then refuses a
 *    prober until the head timeout frees a place: the cap exists so that the data path's
 *    descriptors are never spent; the data path and the admin listener keep serving.
 *
 * Four faults this review found, each fixed with its test here: a service's grpc-status
 * became a metric label as sent (unbounded series), and a span attribute that was no
 * integer; a tracestate outlived the trace it came with; spans held 15 KB paths whole
 * while the collector stalled (an engine substring of the head kept it all).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import http2, { type IncomingHttpHeaders, type ServerHttp2Stream } from "node:http2";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { mesh } from "../helpers/cli.ts";
import { fixtureFor, metricValue } from "../helpers/mesh-fixture.ts";
import { otlpCollector, type Collector } from "../helpers/observability.ts";
import { recordingService, rssMiB, type RecordingService } from "../helpers/data-plane.ts";
import { rawExchange } from "../helpers/raw-http.ts";
import { eventually } from "../helpers/wait.ts";

type Sidecar = Awaited<ReturnType<ReturnType<typeof fixtureFor>["proxy"]>> & { status?: number };

const fx = fixtureFor("orders", "payments", "greeter");
let collector: Collector;
/** A collector that takes each export and never answers (released in afterAll). */
let stalled: ReturnType<typeof Bun.serve>;
const stalledHeld: (() => void)[] = [];
let stalledExports = 0;
let grpcServer: http2.Http2Server;
let service: RecordingService;
let payments: Sidecar;
let greeter: Sidecar;
let orders: Sidecar;
/** Two sidecars exporting to the stalled collector: one for short spans, one for long ones (a queue once full stays full). */
let stalledOrders: Sidecar;
let stalledLong: Sidecar;
let outLog: string;
let inLog: string;

beforeAll(async () => {
  collector = otlpCollector();
  stalled = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    idleTimeout: 0,
    fetch: () => (stalledExports++, new Promise<Response>((resolve) => stalledHeld.push(() => resolve(new Response("{}"))))),
  });
  // A gRPC-shaped h2c service: a trailers-only answer with the grpc-status the call asked for.
  grpcServer = http2.createServer();
  grpcServer.on("stream", (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => {
    stream.on("error", () => {});
    stream.resume();
    stream.on("end", () => {
      if (stream.destroyed || stream.closed) return;
      stream.respond({ ":status": 200, "content-type": "application/grpc", "grpc-status": String(headers["x-want-status"] ?? "0"), "grpc-message": "m" }, { endStream: true });
    });
  });
  const grpcPort = await new Promise<number>((r) => grpcServer.listen(0, "127.0.0.1", () => r((grpcServer.address() as { port: number }).port)));
  service = recordingService();
  outLog = join(fx.tmp.path, "orders-access.log");
  inLog = join(fx.tmp.path, "payments-access.log");
  const trace = ["--trace-collector", collector.url, "--trace-sampling", "0"];
  const withStatus = (s: Sidecar): Sidecar => ({ ...s, status: s.ready.status as number });
  payments = withStatus(await fx.proxy("payments", service.url, undefined, [...trace, "--access-log", inLog, "--status", "127.0.0.1:0"]));
  greeter = await fx.proxy("greeter", `http://127.0.0.1:${grpcPort}`, undefined, trace);
  const config = fx.config("orders", { payments: [payments.ports.inbound], greeter: [greeter.ports.inbound] });
  orders = withStatus(await fx.proxy("orders", fx.echo("orders").url, config, [...trace, "--access-log", outLog, "--status", "127.0.0.1:0"]));
  const toStalled = ["--trace-collector", `http://127.0.0.1:${stalled.port}/v1/traces`, "--trace-sampling", "100"];
  stalledOrders = await fx.proxy("orders", fx.echo("orders").url, fx.config("orders-stalled", { payments: [payments.ports.inbound] }), toStalled);
  stalledLong = await fx.proxy("orders", fx.echo("orders").url, fx.config("orders-stalled-long", { payments: [payments.ports.inbound] }), toStalled);
}, 60_000);

afterAll(() => {
  collector?.stop();
  for (const release of stalledHeld) release();
  stalled?.stop(true);
  grpcServer?.close();
  service?.stop();
  // The sidecars (by their handles) and the temp dir go in the fixture's own afterAll.
});

// ---------------------------------------------------------------- helpers

const scrape = async (port: number) => (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
const sampleLines = (text: string) => text.split("\n").filter((l) => l !== "" && !l.startsWith("#"));
const seriesOf = (text: string, name: string) => sampleLines(text).filter((l) => l.startsWith(name + "{") || l.startsWith(name + " "));

/** Runs `jobs` `conc` at a time; stops starting new ones after `budgetMs`. Returns how many ran. */
async function bounded<T>(items: T[], conc: number, budgetMs: number, job: (item: T) => Promise<void>): Promise<number> {
  const until = Date.now() + budgetMs;
  let done = 0;
  for (let i = 0; i < items.length && Date.now() < until; i += conc) {
    const batch = items.slice(i, i + conc);
    await Promise.all(batch.map(job));
    done += batch.length;
  }
  return done;
}

async function get(url: string, headers: Record<string, string>, method = "GET"): Promise<number> {
  try {
    const r = await fetch(url, { method, headers, signal: AbortSignal.timeout(5000) });
    await r.arrayBuffer();
    return r.status;
  } catch {
    return 0;
  }
}

/** gRPC-shaped calls over one h2c connection, the statuses `want` asked of the service; `extra` headers on each. */
async function grpcCalls(port: number, want: string[], extra: Record<string, string> = {}, conc = 32): Promise<number> {
  const session = http2.connect(`http://127.0.0.1:${port}`);
  session.on("error", () => {});
  const one = (s: string) =>
    new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, 5000);
      const req = session.request({ ":method": "POST", ":path": "/greet.Greeter/Hello", ":authority": "greeter", "content-type": "application/grpc", te: "trailers", "x-want-status": s, ...extra });
      const done = () => (clearTimeout(timer), resolve());
      req.on("error", done);
      req.on("close", done);
      req.resume();
      req.end(Buffer.alloc(5));
    });
  const n = await bounded(want, conc, 30_000, one);
  session.close();
  return n;
}

/**
 * Problems of a Prometheus text-format 0.0.4 body, checked strictly against the spec: metric
 * and label names, quoted label values with only \\ \" \n escapes, a float value, an
 * optional integer timestamp, one TYPE per family before its samples, no series twice.
 */
function expositionProblems(text: string): string[] {
  const problems: string[] = [];
  const METRIC = /^[a-zA-Z_:][a-zA-Z0-9_:]*/;
  const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*/;
  const VALUE = /^(?:[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[+-]?Inf|NaN)(?: -?\d+)?$/;
  const typed = new Map<string, string>();
  const series = new Set<string>();
  if (!text.endsWith("\n")) problems.push("no final newline");
  const lines = text.split("\n").slice(0, -1);
  lines.forEach((line, n) => {
    const at = `line ${n + 1}`;
    if (line.startsWith("# HELP ") || line.startsWith("# TYPE ")) {
      const [name, ...rest] = line.slice(7).split(" ");
      if (!METRIC.test(name!) || METRIC.exec(name!)![0] !== name) problems.push(`${at}: bad metric name in ${line.slice(0, 80)}`);
      if (line.startsWith("# TYPE ")) {
        if (typed.has(name!)) problems.push(`${at}: second TYPE for ${name}`);
        if (!["counter", "gauge", "histogram", "summary", "untyped"].includes(rest.join(" "))) problems.push(`${at}: bad type ${rest.join(" ")}`);
        typed.set(name!, rest.join(" "));
      }
      return;
    }
    if (line.startsWith("#")) return;
    const m = METRIC.exec(line);
    if (!m) return void problems.push(`${at}: no metric name: ${JSON.stringify(line.slice(0, 80))}`);
    const name = m[0];
    let j = name.length;
    const labels: string[] = [];
    if (line[j] === "{") {
      j++;
      for (;;) {
        if (line[j] === "}") break;
        const l = LABEL.exec(line.slice(j));
        if (!l) return void problems.push(`${at}: bad label name at ${j}: ${JSON.stringify(line.slice(0, 120))}`);
        j += l[0].length;
        if (line.slice(j, j + 2) !== '="') return void problems.push(`${at}: no ="" after label ${l[0]}`);
        j += 2;
        let value = "";
        while (j < line.length && line[j] !== '"') {
          if (line[j] === "\\") {
            const e = line[j + 1];
            if (e !== "\\" && e !== '"' && e !== "n") return void problems.push(`${at}: invalid escape \\${e}`);
            value += e === "n" ? "\n" : e;
            j += 2;
          } else value += line[j++];
        }
        if (line[j] !== '"') return void problems.push(`${at}: unterminated label value: ${JSON.stringify(line.slice(0, 120))}`);
        j++;
        labels.push(`${l[0]}=${JSON.stringify(value)}`);
        if (line[j] === ",") j++;
        else if (line[j] !== "}") return void problems.push(`${at}: expected , or } at ${j}: ${JSON.stringify(line.slice(0, 120))}`);
      }
      j++;
    }
    if (line[j] !== " ") return void problems.push(`${at}: no space before the value: ${JSON.stringify(line.slice(0, 120))}`);
    if (!VALUE.test(line.slice(j + 1))) problems.push(`${at}: bad value ${JSON.stringify(line.slice(j + 1))}`);
    const family = [name, name.replace(/_(bucket|sum|count)$/, "")].find((f) => typed.has(f));
    if (family === undefined) problems.push(`${at}: sample of ${name} before its TYPE`);
    const key = `${name}{${labels.sort().join(",")}}`;
    if (series.has(key)) problems.push(`${at}: series twice: ${key.slice(0, 120)}`);
    series.add(key);
  });
  return problems;
}

/** promtool's verdict on a body: undefined when promtool is not installed; parse errors only (lint advice ignored). */
function promtoolErrors(text: string): string | undefined {
  const promtool = Bun.which("promtool") ?? (existsSync("/usr/bin/promtool") ? "/usr/bin/promtool" : undefined);
  if (promtool === undefined) return undefined;
  const r = Bun.spawnSync([promtool, "check", "metrics"], { stdin: Buffer.from(text), stdout: "pipe", stderr: "pipe", timeout: 30_000 });
  const out = r.stdout.toString() + r.stderr.toString();
  // 0: clean; 3: lint advice only (naming); 1: the body did not parse.
  return r.exitCode === 0 || r.exitCode === 3 ? "" : out.slice(0, 2000);
}

// ---------------------------------------------------------------- metric labels

describe("metric labels a caller controls", () => {
  test("5,000 distinct paths, methods, Hosts (unknown destinations, over HTTP/1.1 and h2c) and header values mint no series on either side", async () => {
    const before = { orders: sampleLines(await scrape(orders.ports.admin)).length, payments: sampleLines(await scrape(payments.ports.admin)).length };
    const rssBefore = rssMiB(orders.proc.pid);
    const base = `http://127.0.0.1:${orders.ports.outbound}`;
    const items = Array.from({ length: 4000 }, (_, i) => i);
    const statuses = new Map<number, number>();
    const ran = await bounded(items, 32, 60_000, async (i) => {
      const known = i % 2 === 0;
      const method = ["GET", "POST", "PUT", `X${i.toString(36).toUpperCase()}`][i % 4]!;
      const s = await get(`${base}/p/${i}/${crypto.randomUUID()}?q=${i}`, { host: known ? "payments" : `h${i}-${crypto.randomUUID()}.example`, "user-agent": `ua-${i}`, "x-tenant": `t${i}`, "x-request-id": crypto.randomUUID() }, method);
      statuses.set(s, (statuses.get(s) ?? 0) + 1);
    });
    // h2c with prior knowledge: 1,000 unknown :authority values.
    const session = http2.connect(base);
    session.on("error", () => {});
    const h2ran = await bounded(Array.from({ length: 1000 }, (_, i) => i), 32, 30_000, (i) =>
      new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 5000);
        const req = session.request({ ":method": "GET", ":path": `/h2/${i}`, ":authority": `a${i}.${crypto.randomUUID()}` });
        const done = () => (clearTimeout(timer), resolve());
        req.on("error", done);
        req.on("close", done);
        req.resume();
        req.end();
      }),
    );
    session.close();
    expect(ran + h2ran).toBe(5000);
    // Known destination answered 200 (or 405/501 for odd methods the echo refuses); unknown ones 404 no-route.
    expect(statuses.get(404)).toBeGreaterThanOrEqual(2000);
    const ordersText = await scrape(orders.ports.admin);
    const paymentsText = await scrape(payments.ports.admin);
    const grown = { orders: sampleLines(ordersText).length - before.orders, payments: sampleLines(paymentsText).length - before.payments };
    const rssAfter = rssMiB(orders.proc.pid);
    console.log(`[cardinality] 5000 distinct requests: series +${grown.orders} (orders) +${grown.payments} (payments); /metrics ${ordersText.length} B; orders RSS ${rssBefore.toFixed(1)} -> ${rssAfter.toFixed(1)} MiB`);
    // New status classes and one latency histogram per destination at most: a handful, not thousands.
    expect(grown.orders).toBeLessThanOrEqual(40);
    expect(grown.payments).toBeLessThanOrEqual(40);
    expect(ordersText.length).toBeLessThan(64 * 1024);
    const peers = new Set(seriesOf(ordersText, "mesh_requests_total").map((l) => /peer="([^"]*)"/.exec(l)?.[1]));
    expect([...peers].sort()).toEqual(["payments", "unknown"]);
    expect(rssAfter - rssBefore).toBeLessThan(64);
  }, 120_000);

  test("distinct SNI names, no client certificate and an untrusted CA's certificate at the inbound add no series", async () => {
    const otherCa = join(fx.tmp.path, "other-ca");
    expect((await mesh("ca", "init", "--trust-domain", "mesh.local", "--out", otherCa)).code).toBe(0);
    const intruderDir = join(fx.tmp.path, "certs", "intruder");
    expect((await mesh("ca", "issue", "--service", "payments", "--ca-dir", otherCa, "--out", intruderDir, "--force")).code).toBe(0);
    const intruder = { cert: readFileSync(join(intruderDir, "chain.pem"), "utf8"), key: readFileSync(join(intruderDir, "key.pem"), "utf8") };
    const before = sampleLines(await scrape(payments.ports.admin)).length;
    const handshake = (i: number) =>
      new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 3000);
        const done = () => (clearTimeout(timer), resolve());
        void Bun.connect({
          hostname: "127.0.0.1",
          port: payments.ports.inbound,
          tls: { serverName: `sni-${i}-${crypto.randomUUID()}.example`, rejectUnauthorized: false, ...(i % 2 === 0 ? intruder : {}) },
          socket: {
            handshake: (s) => void s.write("GET / HTTP/1.1\r\nhost: x\r\n\r\n"),
            data: () => {},
            close: done,
            error: done,
            connectError: done,
          },
        }).catch(done);
      });
    expect(await bounded(Array.from({ length: 300 }, (_, i) => i), 20, 30_000, handshake)).toBe(300);
    const text = await scrape(payments.ports.admin);
    const failures = seriesOf(text, "mesh_tls_failures_total");
    console.log(`[cardinality] 300 refused TLS peers: ${failures.join(" | ")}`);
    expect(sampleLines(text).length - before).toBeLessThanOrEqual(3);
    expect(failures.length).toBeLessThanOrEqual(3);
  }, 60_000);

  test("a service's grpc-status is a label only as one of gRPC's codes: 3,000 distinct values add at most the code 2 (UNKNOWN) series on either sidecar", async () => {
    const want = Array.from({ length: 3000 }, (_, i) => (i < 2980 ? `${100 + i}` : [`x"y`, `a\\b`, `{}`, `é`, `-1`, `1 1`, "OK", "UNAVAILABLE", "", "17", "00", "+3", "3.0", "9999999999", "ⅰ", "\t", "a,b", "le", "#", "\\n"][i - 2980]!));
    const rss = { orders: rssMiB(orders.proc.pid), greeter: rssMiB(greeter.proc.pid) };
    expect(await grpcCalls(orders.ports.outbound, want)).toBe(3000);
    const ordersText = await scrape(orders.ports.admin);
    const greeterText = await scrape(greeter.ports.admin);
    const out = seriesOf(ordersText, "mesh_grpc_responses_total");
    const inb = seriesOf(greeterText, "mesh_grpc_responses_total");
    console.log(`[cardinality] 3000 gRPC statuses: ${out.length} series on orders (/metrics ${ordersText.length} B, RSS ${rss.orders.toFixed(1)} -> ${rssMiB(orders.proc.pid).toFixed(1)} MiB), ${inb.length} on greeter (RSS ${rss.greeter.toFixed(1)} -> ${rssMiB(greeter.proc.pid).toFixed(1)} MiB); e.g. ${out.find((l) => l.includes('x\\"y'))}`);
    // gRPC has 17 codes (0-16), written without leading zeros or signs: none was sent, so every call is 2 UNKNOWN, as gRPC clients read a code they do not know.
    const codes = (lines: string[]) => new Set(lines.map((l) => /grpc_status="((?:[^"\\]|\\.)*)"/.exec(l)?.[1]));
    expect(codes(out)).toEqual(new Set(["2"]));
    expect(codes(inb)).toEqual(new Set(["2"]));
  }, 90_000);
});

// ---------------------------------------------------------------- exposition

describe("exposition", () => {
  test("every listener's /metrics, after the attacks above, is valid text format 0.0.4 (strict check here, and promtool when installed)", async () => {
    for (const [who, port] of [
      ["orders admin", orders.ports.admin],
      ["orders status", orders.status!],
      ["payments admin", payments.ports.admin],
      ["greeter admin", greeter.ports.admin],
      ["stalled orders admin", stalledOrders.ports.admin],
      ["stalled long admin", stalledLong.ports.admin],
    ] as const) {
      const res = await fetch(`http://127.0.0.1:${port}/metrics`);
      expect(res.headers.get("content-type")).toBe("text/plain; version=0.0.4; charset=utf-8");
      const bytes = new Uint8Array(await res.arrayBuffer());
      const text = new TextDecoder("utf-8", { fatal: true }).decode(bytes); // throws on invalid UTF-8
      expect({ who, problems: expositionProblems(text).slice(0, 5) }).toEqual({ who, problems: [] });
      const promtool = promtoolErrors(text);
      if (promtool === undefined) console.log("[exposition] promtool not installed: strict check only");
      else expect({ who, promtool }).toEqual({ who, promtool: "" });
    }
  }, 60_000);

  test("the strict checker itself refuses what the spec forbids", () => {
    expect(expositionProblems('# TYPE a counter\na{x="1"} 1\n')).toEqual([]);
    expect(expositionProblems('# TYPE a counter\na{x="1\\q"} 1\n')).not.toEqual([]);
    expect(expositionProblems('# TYPE a counter\na{x="1"2"} 1\n')).not.toEqual([]);
    expect(expositionProblems('# TYPE a counter\na{x="1"} 1\na{x="1"} 2\n')).not.toEqual([]);
    expect(expositionProblems('a{x="1"} 1\n')).not.toEqual([]);
    expect(expositionProblems('# TYPE a counter\na{x="1"} one\n')).not.toEqual([]);
  });
});

// ---------------------------------------------------------------- access log

describe("access log", () => {
  const linesOf = (file: string) => readFileSync(file, "utf8").split("\n").filter(Boolean);

  test("hostile values (obs-text i.e. invalid UTF-8 as sent, quotes, backslashes, percent-encoded quotes and RTL override in the path, 8 KiB headers) give one valid JSON object per line, bounded, no raw control byte, valid UTF-8; credentials are not logged", async () => {
    const marker = `/log-attack-${crypto.randomUUID()}`;
    const secret = `s3cr3t-${crypto.randomUUID()}`;
    const jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhdHRhY2tlciJ9.c2lnbmF0dXJl";
    const long = "R".repeat(8 * 1024);
    const obs = "caf\xe9 \xff\xfe\xc3\x28 \x80";
    const head =
      `POST ${marker}/%E2%80%AE%22?q=%22%7D%5C HTTP/1.1\r\n` +
      `host: payments\r\n` +
      `x-request-id: ${obs}"},{"forged":1\\\r\n` +
      `user-agent: ${long}\r\n` +
      `referer: ${obs}\r\n` +
      `authorization: Bearer ${jwt}.${secret}\r\n` +
      `proxy-authorization: Basic ${secret}\r\n` +
      `cookie: session=${secret}\r\n` +
      `content-length: 2\r\n\r\nok`;
    const r = await rawExchange(head, { port: orders.ports.outbound, quietMs: 300, timeoutMs: 5000 });
    expect(r.statuses[0]).toBe(200);
    for (const file of [outLog, inLog]) {
      expect(await eventually(() => existsSync(file) && readFileSync(file, "latin1").includes(marker), 5000)).toBe(true);
      const raw = readFileSync(file);
      new TextDecoder("utf-8", { fatal: true }).decode(raw); // the file is valid UTF-8 throughout
      // No raw C0 control byte but the line separator.
      expect([...raw].filter((b) => b < 0x20 && b !== 0x0a).length).toBe(0);
      const lines = linesOf(file);
      for (const l of lines) {
        expect(l.length).toBeLessThan(128 * 1024);
        expect(typeof JSON.parse(l)).toBe("object");
      }
      const line = lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => String(l.path).startsWith(marker))!;
      expect(line.forged).toBeUndefined();
      expect(line.status).toBe(200);
      expect(String(line.request_id)).toEndWith('"},{"forged":1\\');
      const text = raw.toString("utf8");
      expect({ file, secretLogged: text.includes(secret), jwtLogged: text.includes(jwt) }).toEqual({ file, secretLogged: false, jwtLogged: false });
    }
  }, 30_000);

  test("CR, LF, NUL and ESC/BEL (ANSI sequences) in a header value or the request target are refused before anything is logged; percent-encoded in the path, refused and logged still encoded", async () => {
    const marker = `/log-inject-${crypto.randomUUID()}`;
    const attempts = [
      `GET ${marker}-a HTTP/1.1\r\nhost: payments\r\nx-request-id: a\rb\r\n\r\n`,
      `GET ${marker}-b HTTP/1.1\r\nhost: payments\r\nx-request-id: a\0b\r\n\r\n`,
      `GET ${marker}-c\0 HTTP/1.1\r\nhost: payments\r\n\r\n`,
      `GET ${marker}-d\x1b[2J HTTP/1.1\r\nhost: payments\r\n\r\n`,
      `GET ${marker}-e HTTP/1.1\r\nhost: payments\r\nx-request-id: a\nforged: {"status":200}\r\n\r\n`,
      `GET ${marker}-f HTTP/1.1\r\nhost: payments\r\nuser-agent: \x1b[31mRED\x1b[0m\x1b]0;title\x07\r\n\r\n`,
      `GET ${marker}-g HTTP/1.1\r\nhost: payments\x1b[2J\r\n\r\n`,
      `GET ${marker}-h/%1B%5B31m%00%0d%0a HTTP/1.1\r\nhost: payments\r\n\r\n`,
    ];
    for (const a of attempts) {
      const r = await rawExchange(a, { port: orders.ports.outbound, quietMs: 300, timeoutMs: 3000 });
      expect(r.statuses[0] ?? 0).toBeGreaterThanOrEqual(400);
    }
    await Bun.sleep(1300); // a flush
    const raw = readFileSync(outLog);
    expect([...raw].filter((b) => b < 0x20 && b !== 0x0a).length).toBe(0);
    const lines = linesOf(outLog).map((l) => JSON.parse(l) as Record<string, unknown>);
    // A raw control byte ends the head's parse: no line. The percent-encoded ones are refused
    // after it (400) and logged as sent, still encoded, which is harmless.
    const logged = lines.filter((l) => String(l.path).startsWith(marker)).map((l) => [l.path, l.status]);
    expect(logged).toEqual([[`${marker}-h/%1B%5B31m%00%0d%0a`, 400]]);
    expect(lines.some((l) => "forged" in l)).toBe(false);
    // Refusals are counted by a fixed reason, not by what was sent.
    const reasons = seriesOf(await scrape(orders.ports.admin), "mesh_requests_refused_total");
    console.log(`[access-log] refusal series: ${reasons.join(" | ")}`);
    expect(reasons.length).toBeLessThanOrEqual(12);
    for (const r of reasons) expect(r).toMatch(/reason="[a-z0-9-]{1,40}"/);
  }, 30_000);
});

// ---------------------------------------------------------------- trace context

describe("trace context", () => {
  const id = "4bf92f3577b34da6a3ce929d0e0e4736";
  const lastSeen = () => service.seen.at(-1)!;

  test("malformed, oversized and repeated traceparents: the service gets exactly one well-formed traceparent of a new trace, never the garbage", async () => {
    const cases: [string, string[]][] = [
      ["version ff", [`ff-${id}-00f067aa0ba902b7-01`]],
      ["all-zero trace id", [`00-${"0".repeat(32)}-00f067aa0ba902b7-01`]],
      ["all-zero parent id", [`00-${id}-${"0".repeat(16)}-01`]],
      ["upper case", [`00-${id.toUpperCase()}-00F067AA0BA902B7-01`]],
      ["extra field on 00", [`00-${id}-00f067aa0ba902b7-01-${"x".repeat(4000)}`]],
      ["4 KiB of garbage", ["z".repeat(4096)]],
      ["repeated", [`00-${id}-00f067aa0ba902b7-01`, `00-${id}-00f067aa0ba902b8-01`]],
      ["one list value", [`00-${id}-00f067aa0ba902b7-01, 00-${id}-00f067aa0ba902b8-01`]],
    ];
    for (const [why, values] of cases) {
      const marker = `/tp-${why.replace(/\W/g, "-")}`;
      const head = `GET ${marker} HTTP/1.1\r\nhost: payments\r\n${values.map((v) => `traceparent: ${v}\r\n`).join("")}\r\n`;
      const r = await rawExchange(head, { port: orders.ports.outbound, quietMs: 300, timeoutMs: 5000 });
      expect({ why, status: r.statuses[0] }).toEqual({ why, status: 200 });
      const seen = lastSeen();
      expect(seen.path).toBe(marker);
      expect({ why, tp: seen.headers.traceparent }).toEqual({ why, tp: expect.stringMatching(/^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$/) });
      expect(seen.headers.traceparent).not.toContain(id);
    }
    // A later version with more fields is read (its ids continued) and handed on as version 00, without the extra.
    const later = await rawExchange(`GET /tp-later HTTP/1.1\r\nhost: payments\r\ntraceparent: cc-${id}-00f067aa0ba902b7-00-${"y".repeat(2000)}\r\n\r\n`, { port: orders.ports.outbound, quietMs: 300 });
    expect(later.statuses[0]).toBe(200);
    expect(lastSeen().headers.traceparent).toMatch(new RegExp(`^00-${id}-[0-9a-f]{16}-00$`));
    expect(await fetch(`http://127.0.0.1:${orders.ports.admin}/live`).then((r) => r.status)).toBe(200);
  }, 60_000);

  test("tracestate with a valid traceparent is carried as sent, even 40 members and over 512 chars (acceptable: a hop that does not read it may forward it)", async () => {
    const state = Array.from({ length: 40 }, (_, i) => `v${i}=${"x".repeat(14)}`).join(",");
    expect(state.length).toBeGreaterThan(512);
    const r = await rawExchange(`GET /ts-valid HTTP/1.1\r\nhost: payments\r\ntraceparent: 00-${id}-00f067aa0ba902b7-00\r\ntracestate: ${state}\r\n\r\n`, { port: orders.ports.outbound, quietMs: 300 });
    expect(r.statuses[0]).toBe(200);
    expect(lastSeen().headers.tracestate).toBe(state);
    expect(lastSeen().headers.traceparent).toMatch(new RegExp(`^00-${id}-`));
  }, 30_000);

  test("a tracestate that came without a (valid) traceparent is discarded with the sidecar's new trace, as W3C Trace Context says it MUST be", async () => {
    const results: Record<string, string | undefined> = {};
    for (const [why, tp] of [
      ["no traceparent", ""],
      ["garbled traceparent", "traceparent: 00-xyz-00f067aa0ba902b7-01\r\n"],
      ["version ff", `traceparent: ff-${id}-00f067aa0ba902b7-01\r\n`],
    ] as const) {
      const r = await rawExchange(`GET /ts-orphan HTTP/1.1\r\nhost: payments\r\n${tp}tracestate: vendor=stranger-${why.length}\r\n\r\n`, { port: orders.ports.outbound, quietMs: 300 });
      expect(r.statuses[0]).toBe(200);
      expect(lastSeen().headers.traceparent).not.toContain(id);
      results[why] = lastSeen().headers.tracestate;
    }
    console.log(`[trace] tracestate the service received with a new trace: ${JSON.stringify(results)}`);
    expect(results).toEqual({ "no traceparent": undefined, "garbled traceparent": undefined, "version ff": undefined });
  }, 30_000);

  test("a caller's sampled flag is followed at --trace-sampling 0 (acceptable: W3C, as Envoy), and an unsampled request exports nothing", async () => {
    const sampledTrace = crypto.randomUUID().replace(/-/g, "");
    const unsampledTrace = crypto.randomUUID().replace(/-/g, "");
    for (const [t, flag] of [[sampledTrace, "01"], [unsampledTrace, "00"]] as const) {
      const r = await rawExchange(`GET /forced HTTP/1.1\r\nhost: payments\r\ntraceparent: 00-${t}-00f067aa0ba902b7-${flag}\r\n\r\n`, { port: orders.ports.outbound, quietMs: 300 });
      expect(r.statuses[0]).toBe(200);
    }
    expect(await eventually(() => collector.spans.filter((s) => s.span.traceId === sampledTrace).length >= 2, 5000)).toBe(true);
    await Bun.sleep(1200);
    expect(collector.spans.filter((s) => s.span.traceId === unsampledTrace)).toEqual([]);
  }, 30_000);

  test("a span's rpc.grpc.status_code is always an integer code: a non-numeric grpc-status is recorded as 2 (UNKNOWN), so no OTLP intValue is malformed", async () => {
    const traces: Record<string, string> = {};
    for (const s of ["abc", "1.5", "OK"]) {
      const traceId = crypto.randomUUID().replace(/-/g, "");
      traces[s] = traceId;
      expect(await grpcCalls(orders.ports.outbound, [s], { traceparent: `00-${traceId}-00f067aa0ba902b7-01` })).toBe(1);
    }
    const found: Record<string, (string | undefined)[]> = {};
    for (const [s, traceId] of Object.entries(traces)) {
      expect(await eventually(() => collector.spans.filter((e) => e.span.traceId === traceId).length >= 2, 5000)).toBe(true);
      found[s] = collector.spans.filter((e) => e.span.traceId === traceId).map((e) => e.span.attributes.find((a) => a.key === "rpc.grpc.status_code")?.value.intValue);
    }
    console.log(`[trace] rpc.grpc.status_code intValues exported: ${JSON.stringify(found)}`);
    // proto3 JSON: an int64 is a decimal integer (as a string); a gRPC status is 0-16.
    for (const [s, values] of Object.entries(found))
      for (const v of values) expect({ sent: s, intValue: v }).toEqual({ sent: s, intValue: expect.stringMatching(/^([0-9]|1[0-6])$/) });
  }, 30_000);

  test("spans held while the collector stalls: the queue is bounded in count, drops are counted, and the data path does not wait for the collector", async () => {
    const pid = stalledOrders.proc.pid;
    const before = rssMiB(pid);
    const started = Date.now();
    let slowest = 0;
    const ran = await bounded(Array.from({ length: 6000 }, (_, i) => i), 32, 60_000, async (i) => {
      const t = performance.now();
      await get(`http://127.0.0.1:${stalledOrders.ports.outbound}/short/${i}`, { host: "nowhere" });
      slowest = Math.max(slowest, performance.now() - t);
    });
    expect(ran).toBe(6000);
    const dropped = await metricValue(stalledOrders.ports.admin, "mesh_trace_spans_dropped_total", { reason: "queue-full" });
    const after = rssMiB(pid);
    console.log(`[trace] 6000 short-path spans, collector stalled: ${stalledExports} exports hanging, ${dropped} dropped queue-full, RSS ${before.toFixed(1)} -> ${after.toFixed(1)} MiB in ${Date.now() - started} ms, slowest request ${slowest.toFixed(0)} ms`);
    expect(stalledExports).toBeGreaterThanOrEqual(1);
    // 4,096 queued + 512 in flight at most; the rest dropped and counted.
    expect(dropped).toBeGreaterThanOrEqual(6000 - 4096 - 512);
    expect(slowest).toBeLessThan(2000);
    expect(after - before).toBeLessThan(48);
  }, 90_000);

  test("spans held while the collector stalls are bounded in size too: 6,000 sampled requests with 15 KB paths grow the sidecar far less than their paths (recorded at most 256 characters)", async () => {
    const pid = stalledLong.proc.pid;
    const before = rssMiB(pid);
    const path = "/" + "a".repeat(15_000);
    const ran = await bounded(Array.from({ length: 6000 }, (_, i) => i), 32, 60_000, async (i) => {
      await get(`http://127.0.0.1:${stalledLong.ports.outbound}${path}${i}`, { host: "nowhere" });
    });
    expect(ran).toBe(6000);
    await Bun.sleep(500);
    const after = rssMiB(pid);
    console.log(`[trace] 6000 long-path spans, collector stalled: RSS ${before.toFixed(1)} -> ${after.toFixed(1)} MiB`);
    // Bounded in bytes (OpenTelemetry's attribute value length limit, or a byte budget for the queue), this stays small.
    expect(after - before).toBeLessThan(48);
  }, 90_000);
});

// ---------------------------------------------------------------- status and admin listeners

describe("status and admin listeners", () => {
  test("the status listener serves /live, /ready, /metrics only; neither it nor /config_dump shows key material; the admin will not bind off loopback", async () => {
    const base = `http://127.0.0.1:${payments.status}`;
    for (const path of ["/config_dump", "/config_dump?x", "/debug", "/quitquitquit", "/../config_dump", "/metrics/../config_dump"]) {
      const r = await fetch(`${base}${path}`);
      expect({ path, status: r.status }).toEqual({ path, status: 404 });
      await r.arrayBuffer();
    }
    for (const method of ["POST", "PUT", "DELETE"]) {
      const r = await fetch(`${base}/metrics`, { method });
      expect(r.status).toBe(405);
      await r.arrayBuffer();
    }
    const key = readFileSync(join(fx.tmp.path, "certs", "payments", "key.pem"), "utf8");
    const keyBody = key.split("\n").find((l) => l.length > 40 && !l.startsWith("-----"))!;
    const dump = await (await fetch(`http://127.0.0.1:${payments.ports.admin}/config_dump`)).text();
    const metricsText = await scrape(payments.status!);
    for (const text of [dump, metricsText]) expect({ privateKey: text.includes("PRIVATE KEY"), keyBytes: text.includes(keyBody) }).toEqual({ privateKey: false, keyBytes: false });
    const bad = await mesh("proxy", "--service", "orders", "--upstream", "http://127.0.0.1:9", "--admin", "0.0.0.0:0");
    expect(bad.code).not.toBe(0);
    expect(bad.err).toContain("--admin");
  }, 30_000);

  test("200 slowloris connections to the status listener: it holds its own cap; the data path and the admin keep serving", async () => {
    const port = orders.status!;
    const socks: { end(): void }[] = [];
    let closedByServer = 0;
    const refusedBefore = await metricValue(orders.ports.admin, "mesh_connections_refused_total", { direction: "status" });
    try {
      await bounded(Array.from({ length: 200 }, (_, i) => i), 50, 20_000, async () => {
        try {
          socks.push(
            await Bun.connect({
              hostname: "127.0.0.1",
              port,
              socket: { open: (s) => void s.write("GET /metrics HTTP/1.1\r\nhost: x\r\nx-slow: "), data: () => {}, close: () => void closedByServer++, error: () => {} },
            }),
          );
        } catch {
          closedByServer++;
        }
      });
      await Bun.sleep(300);
      const ok = await get(`http://127.0.0.1:${orders.ports.outbound}/during-flood`, { host: "payments" });
      const admin = await fetch(`http://127.0.0.1:${orders.ports.admin}/metrics`).then((r) => r.status);
      const refused = (await metricValue(orders.ports.admin, "mesh_connections_refused_total", { direction: "status" })) - refusedBefore;
      console.log(`[status] 200 slow connections: ${closedByServer} closed by the sidecar, ${refused} refused at accept; data path ${ok}, admin ${admin}`);
      expect(ok).toBe(200);
      expect(admin).toBe(200);
      expect(refused).toBeGreaterThanOrEqual(100);
    } finally {
      for (const s of socks) s.end();
    }
    // Once the slow ones are gone, probes are answered again.
    expect(await eventually(async () => (await get(`http://127.0.0.1:${port}/live`, {})) === 200, 5000)).toBe(true);
  }, 60_000);
});
