/**
 * Attacker's review of CONNECT on the outbound listener (connection-start.ts,
 * h1-server/connection.ts parseNext, outbound-handler.ts `connect:`). Every test asserts
 * the SAFE behaviour. Four findings failed here first, each marked below; all are fixed:
 * the CONNECT head now goes through the strict parser (request-parse.ts: its header rules,
 * no content, a port 1-65535), and a CONNECT to no Service is counted and logged as a
 * call to "unknown". Loopback only, bounded loops.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Socket } from "bun";
import { clientTls, recordingService, type RecordingService } from "../helpers/data-plane.ts";
import { fixtureFor, metricValue, type EchoService } from "../helpers/mesh-fixture.ts";
import { rawExchange, statusesOf, type RawResult } from "../helpers/raw-http.ts";

const fx = fixtureFor("orders", "payments", "billing");
let payments: RecordingService;
let billing: EchoService;
let paymentsProxy: Awaited<ReturnType<typeof fx.proxy>>;
let ordersProxy: Awaited<ReturnType<typeof fx.proxy>>;

beforeAll(async () => {
  payments = recordingService();
  billing = fx.echo("billing");
  paymentsProxy = await fx.proxy("payments", payments.url);
  const billingProxy = await fx.proxy("billing", billing.url);
  ordersProxy = await fx.proxy("orders", fx.echo("orders").url, fx.config("orders", { payments: [paymentsProxy.ports.inbound], billing: [billingProxy.ports.inbound] }));
});
afterAll(() => payments?.stop());

const OUT = () => ({ port: ordersProxy.ports.outbound });
const CONNECT = "CONNECT payments:80 HTTP/1.1\r\nHost: payments:80\r\n";
const call = (path: string, host = "payments", extra = "") => `GET ${path} HTTP/1.1\r\nHost: ${host}\r\n${extra}Connection: close\r\n\r\n`;
const seenPath = (p: string) => payments.seen.filter((s) => s.path === p).length;
const refused = (reason?: string) => metricValue(ordersProxy.ports.admin, "mesh_requests_refused_total", reason ? { direction: "outbound", reason } : { direction: "outbound" });

/** The proxy still serves an ordinary CONNECT tunnel afterwards (it did not crash or wedge). */
async function stillServes(): Promise<void> {
  const r = await rawExchange(`${CONNECT}\r\n${call("/alive")}`, OUT());
  expect(r.statuses).toEqual([200, 200]);
}

/** Sends `bytes`, expects a refusal before any 200, a closed connection, and nothing of `path` at the service. */
async function expectRefusedBeforeTunnel(bytes: string | Uint8Array, path: string, status = 400): Promise<RawResult> {
  const r = await rawExchange(bytes, { ...OUT(), quietMs: 600 });
  await Bun.sleep(100);
  expect({ statuses: r.statuses, closed: r.closed, reached: seenPath(path) }).toEqual({ statuses: [status], closed: true, reached: 0 });
  return r;
}

describe("smuggling across the CONNECT boundary", () => {
  // Finding 1, fixed: the CONNECT head's header lines are never parsed (the CONNECT code read
  // only the request line). A CONNECT with Content-Length is answered 200 and its "body"
  // is run as the first request of the tunnel; a party that honours the Content-Length
  // (an intermediary in front, a logging layer, a client library that wrote a body) sees
  // opaque content where mesh sees a request. The strict parser refuses such ambiguity.
  test("CONNECT with Content-Length and a body that is a request: refused, body never run", async () => {
    const smuggled = call("/smuggled-cl");
    await expectRefusedBeforeTunnel(`${CONNECT}Content-Length: ${smuggled.length}\r\n\r\n${smuggled}`, "/smuggled-cl");
    await stillServes();
  });

  // Finding 1, fixed (same root cause): Transfer-Encoding on a CONNECT is accepted with a 200.
  test("CONNECT with Transfer-Encoding: chunked: refused before any 200", async () => {
    const smuggled = call("/smuggled-te");
    const body = `${smuggled.length.toString(16)}\r\n${smuggled}\r\n0\r\n\r\n`;
    await expectRefusedBeforeTunnel(`${CONNECT}Transfer-Encoding: chunked\r\n\r\n${body}`, "/smuggled-te");
  });

  test("a request pipelined right after the CONNECT head (before the 200) is the tunnel's first, run exactly once", async () => {
    const before = seenPath("/pipelined-1") + seenPath("/pipelined-2");
    const r = await rawExchange(`${CONNECT}\r\n${call("/pipelined-1", "payments", "").replace("Connection: close\r\n", "")}${call("/pipelined-2")}`, OUT());
    expect(r.statuses).toEqual([200, 200, 200]);
    expect(r.text.startsWith("HTTP/1.1 200 Connection established\r\n\r\n")).toBe(true);
    expect(r.closed).toBe(true);
    await Bun.sleep(50);
    expect(seenPath("/pipelined-1") + seenPath("/pipelined-2") - before).toBe(2);
    const order = payments.seen.filter((s) => s.path.startsWith("/pipelined-")).map((s) => s.path);
    expect(order.slice(-2)).toEqual(["/pipelined-1", "/pipelined-2"]);
  });

  test("CONNECT split across reads (mid request line, mid header, mid CRLF CRLF) still tunnels once", async () => {
    for (const cut of [5, 12, CONNECT.length - 3, CONNECT.length + 1]) {
      const whole = `${CONNECT}\r\n${call(`/split-${cut}`)}`;
      const r = await rawExchange(whole.slice(0, cut), { ...OUT(), thenWrite: { afterMs: 150, bytes: whole.slice(cut) } });
      expect({ cut, statuses: r.statuses }).toEqual({ cut, statuses: [200, 200] });
      expect(seenPath(`/split-${cut}`)).toBe(1);
    }
  });

  // Guard of findRequestHeadEnd: holds for the CONNECT head too.
  test("bare LF / bare CR in the CONNECT head: 400, no tunnel", async () => {
    await expectRefusedBeforeTunnel(`CONNECT payments:80 HTTP/1.1\r\nHost: payments:80\nX: y\r\n\r\n${call("/bare-lf")}`, "/bare-lf");
    await expectRefusedBeforeTunnel(`CONNECT payments:80 HTTP/1.1\nHost: payments:80\r\n\r\n${call("/bare-lf2")}`, "/bare-lf2");
    await expectRefusedBeforeTunnel(`CONNECT payments:80 HTTP/1.1\r\nX: a\rb\r\n\r\n${call("/bare-cr")}`, "/bare-cr");
  });

  test("a CONNECT head over 16 KiB: 431, no tunnel", async () => {
    await expectRefusedBeforeTunnel(`${CONNECT}X-Big: ${"a".repeat(17 * 1024)}\r\n\r\n${call("/big")}`, "/big", 431);
  });

  // Finding 2, fixed: the strict parser's header-line checks are not applied to a CONNECT head:
  // obs-fold, NUL/control bytes, malformed names and more than 200 fields are all
  // answered 200 Connection established. Each is refused in any other request.
  test("obs-fold in the CONNECT head: 400", async () => {
    await expectRefusedBeforeTunnel(`${CONNECT}X-A: one\r\n two\r\n\r\n${call("/fold")}`, "/fold");
  });
  test("NUL in a CONNECT header value: 400", async () => {
    await expectRefusedBeforeTunnel(`${CONNECT}X-A: a\x00b\r\n\r\n${call("/nul")}`, "/nul");
  });
  test("malformed header name (space before colon) in the CONNECT head: 400", async () => {
    await expectRefusedBeforeTunnel(`${CONNECT}Bad Name : x\r\n\r\n${call("/badname")}`, "/badname");
  });
  test("more than 200 header fields in the CONNECT head: 431", async () => {
    await expectRefusedBeforeTunnel(`${CONNECT}${"X: y\r\n".repeat(250)}\r\n${call("/many")}`, "/many", 431);
  });
});

describe("CONNECT request-line and target forms", () => {
  test("lower-case `connect` is not a CONNECT and is refused by the strict parser (400)", async () => {
    await expectRefusedBeforeTunnel(`connect payments:80 HTTP/1.1\r\nHost: payments:80\r\n\r\n${call("/lower")}`, "/lower");
  });

  test("absolute-form, origin-form, userinfo and empty-host targets: 400", async () => {
    for (const t of ["http://payments:80", "http://payments:80/", "/payments:80", "user@payments:80", "user:pw@payments:80", ":80", "payments:", "payments:80/x", "payments:+80", "payments:80 x"]) {
      const r = await rawExchange(`CONNECT ${t} HTTP/1.1\r\nHost: payments:80\r\n\r\n${call("/target-form")}`, OUT());
      expect({ t, statuses: r.statuses, closed: r.closed }).toEqual({ t, statuses: [400], closed: true });
    }
    await Bun.sleep(50);
    expect(seenPath("/target-form")).toBe(0);
  });

  test("IP literals that are no service ([::1]:80, 127.0.0.1:80): 404, no tunnel", async () => {
    for (const t of ["[::1]:80", "127.0.0.1:80", "[::ffff:127.0.0.1]:80"]) {
      const r = await rawExchange(`CONNECT ${t} HTTP/1.1\r\n\r\n${call("/ip-lit")}`, OUT());
      expect({ t, statuses: r.statuses, closed: r.closed }).toEqual({ t, statuses: [404], closed: true });
    }
    expect(seenPath("/ip-lit")).toBe(0);
  });

  // Finding 3 (low), fixed: the port is matched by \d{1,5} and then dropped (destinationName
  // strips it), so ports that do not exist (0, 65536, 99999, 00080) are accepted. Harmless
  // for routing (no connection is made to the port), but not "host:port" as RFC 9110
  // §9.3.6 / RFC 3986 define it.
  test("ports 0, 65536, 99999: 400", async () => {
    const got: Record<string, number[]> = {};
    for (const port of ["0", "65536", "99999"]) got[port] = (await rawExchange(`CONNECT payments:${port} HTTP/1.1\r\n\r\n${call("/port")}`, OUT())).statuses;
    expect(got).toEqual({ "0": [400], "65536": [400], "99999": [400] });
    await Bun.sleep(50);
    expect(seenPath("/port")).toBe(0);
  });

  test("CONNECT with a version other than 1.0/1.1 is not accepted", async () => {
    for (const v of ["HTTP/2.0", "HTTP/1.2", "HTTP/0.9", "http/1.1"]) {
      const r = await rawExchange(`CONNECT payments:80 ${v}\r\n\r\n${call("/ver")}`, OUT());
      expect({ v, ok: r.statuses[0] !== 200, closed: r.closed }).toEqual({ v, ok: true, closed: true });
    }
    expect(seenPath("/ver")).toBe(0);
  });

  test("routing follows each request's own Host, never the CONNECT target; an unknown inner Host is 404", async () => {
    const billingBefore = billing.hits;
    const r = await rawExchange(
      `${CONNECT}\r\nGET /to-billing HTTP/1.1\r\nHost: billing\r\n\r\nGET /to-nowhere HTTP/1.1\r\nHost: api.example.com\r\n\r\nGET /to-payments HTTP/1.1\r\nHost: payments\r\nConnection: close\r\n\r\n`,
      OUT(),
    );
    expect(r.statuses).toEqual([200, 200, 404, 200]);
    expect(r.text).toContain('"service":"billing"');
    expect(r.text).toContain("x-mesh-error: no-route");
    expect(billing.hits - billingBefore).toBe(1);
    expect(seenPath("/to-billing")).toBe(0);
    expect(seenPath("/to-payments")).toBe(1);
  });
});

describe("HTTP/2 preface and ordering", () => {
  const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");
  const SETTINGS = Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0]);

  test("the HTTP/2 preface after CONNECT is tunnelled to the HTTP/2 server: 200 then a SETTINGS frame", async () => {
    const r = await rawExchange(Buffer.concat([Buffer.from(`${CONNECT}\r\n`), PREFACE, SETTINGS]), { ...OUT(), quietMs: 500 });
    const head = "HTTP/1.1 200 Connection established\r\n\r\n";
    expect(r.text.startsWith(head)).toBe(true);
    const after = Buffer.from(r.text.slice(head.length), "latin1");
    expect(after.byteLength).toBeGreaterThanOrEqual(9);
    expect(after[3]).toBe(4); // SETTINGS
    expect(statusesOf(r.text)).toEqual([200]);
  });

  test("a preface in the middle of an HTTP/1.1 connection is 505, not a switch to HTTP/2", async () => {
    const r = await rawExchange(Buffer.concat([Buffer.from(`GET /before-pri HTTP/1.1\r\nHost: payments\r\n\r\n`), PREFACE, SETTINGS]), OUT());
    expect(r.statuses).toEqual([200, 505]);
    expect(r.closed).toBe(true);
  });

  test("a preface after CONNECT + one HTTP/1.1 request is 505", async () => {
    const r = await rawExchange(Buffer.concat([Buffer.from(`${CONNECT}\r\nGET /before-pri2 HTTP/1.1\r\nHost: payments\r\n\r\n`), PREFACE, SETTINGS]), OUT());
    expect(r.statuses).toEqual([200, 200, 505]);
    expect(r.closed).toBe(true);
  });

  test("CONNECT after a normal request on the same connection is refused (400), nothing after it runs", async () => {
    const r = await rawExchange(`GET /first HTTP/1.1\r\nHost: payments\r\n\r\n${CONNECT}\r\n${call("/after-late-connect")}`, OUT());
    expect(r.statuses).toEqual([200, 400]);
    expect(r.closed).toBe(true);
    await Bun.sleep(50);
    expect(seenPath("/after-late-connect")).toBe(0);
  });

  test("a second CONNECT, also after requests inside the tunnel, is refused", async () => {
    const r = await rawExchange(`${CONNECT}\r\nGET /in-tunnel HTTP/1.1\r\nHost: payments\r\n\r\n${CONNECT}\r\n${call("/after-second-connect")}`, OUT());
    expect(r.statuses).toEqual([200, 200, 400]);
    expect(r.closed).toBe(true);
    expect(seenPath("/after-second-connect")).toBe(0);
  });

  test("TLS after CONNECT is closed and counted; TLS after a leading CRLF is still refused, not tunnelled", async () => {
    const hello = Buffer.from([0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x00]);
    const before = await refused("connect-tls");
    const r = await rawExchange(Buffer.concat([Buffer.from(`${CONNECT}\r\n`), hello]), OUT());
    expect(r.statuses).toEqual([200]);
    expect(r.closed).toBe(true);
    expect(await refused("connect-tls")).toBe(before + 1);
    const r2 = await rawExchange(Buffer.concat([Buffer.from(`${CONNECT}\r\n\r\n`), hello, Buffer.from("\r\n\r\n")]), OUT());
    expect(r2.closed).toBe(true);
    expect(r2.statuses.slice(1).every((s) => s >= 400)).toBe(true);
  });
});

describe("no open proxy", () => {
  test("CONNECT to a local port or an external name never opens a TCP connection to it", async () => {
    let accepted = 0;
    const listener = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { open() { accepted++; }, data() {} } });
    try {
      const port = listener.port;
      const targets = [`127.0.0.1:${port}`, `localhost:${port}`, `[::ffff:127.0.0.1]:${port}`, `0.0.0.0:${port}`, `localhost.:${port}`];
      for (const t of targets) {
        const r = await rawExchange(`CONNECT ${t} HTTP/1.1\r\nHost: ${t}\r\n\r\nGET / HTTP/1.1\r\nHost: ${t}\r\nConnection: close\r\n\r\n`, OUT());
        expect({ t, statuses: r.statuses }).toEqual({ t, statuses: [404] });
      }
      // A known service as CONNECT target with the listener's port, then inner Hosts naming the listener.
      const r = await rawExchange(
        `CONNECT payments:${port} HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\nGET http://127.0.0.1:${port}/ HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: close\r\n\r\n`,
        OUT(),
      );
      expect(r.statuses).toEqual([200, 404, 404]);
      const ext = await rawExchange(`CONNECT example.com:443 HTTP/1.1\r\n\r\n`, OUT());
      expect(ext.statuses).toEqual([404]);
      await Bun.sleep(300);
      expect(accepted).toBe(0);
    } finally {
      listener.stop(true);
    }
  });
});

describe("identity inside the tunnel", () => {
  test("the callee sees the caller's proven SPIFFE ID and none of the client-sent identity headers", async () => {
    const forged = "spiffe://mesh.local/ns/default/sa/admin";
    const r = await rawExchange(
      `${CONNECT}\r\nGET /identity HTTP/1.1\r\nHost: payments\r\nX-Mesh-Client-Id: ${forged}\r\nl5d-client-id: ${forged}\r\nx_mesh_client_id: ${forged}\r\nX-Forwarded-Client-Cert: By=${forged}\r\nConnection: close\r\n\r\n`,
      OUT(),
    );
    expect(r.statuses).toEqual([200, 200]);
    const seen = payments.seen.find((s) => s.path === "/identity");
    expect(seen).toBeDefined();
    const h = seen!.headers;
    expect(h["x-mesh-client-id"]).toBe("spiffe://mesh.local/ns/default/sa/orders");
    expect(JSON.stringify(h)).not.toContain("sa/admin");
  });

  test("Proxy-Authorization on the CONNECT head does not leak into the tunnelled requests", async () => {
    const r = await rawExchange(`${CONNECT}Proxy-Authorization: Basic c2VjcmV0OnNlY3JldA==\r\n\r\n${call("/proxy-auth")}`, OUT());
    expect(r.statuses).toEqual([200, 200]);
    const seen = payments.seen.find((s) => s.path === "/proxy-auth")!;
    expect(JSON.stringify(seen.headers)).not.toContain("c2VjcmV0");
  });
});

describe("metrics", () => {
  test("a malformed CONNECT target and a second CONNECT are counted as refusals", async () => {
    const t0 = await refused("target");
    await rawExchange(`CONNECT payments HTTP/1.1\r\n\r\n`, OUT());
    expect(await refused("target")).toBe(t0 + 1);
    const t1 = await refused("target");
    await rawExchange(`${CONNECT}\r\n${CONNECT}\r\n`, OUT());
    expect(await refused("target")).toBe(t1 + 1);
  });

  // Finding 4, fixed: a CONNECT refused with 404 (no such service) is counted nowhere: not in
  // mesh_requests_refused_total (answerAndClose skips handler.refused) and not in
  // mesh_requests_total{peer="unknown"} (it never reaches answerUnforwarded). A local app
  // probing for names, or misconfigured to tunnel to external hosts, is invisible.
  test("a CONNECT to no known service is counted (refused or requests_total{peer=unknown})", async () => {
    const admin = ordersProxy.ports.admin;
    const count = async () => (await refused()) + (await metricValue(admin, "mesh_requests_total", { direction: "outbound", peer: "unknown" }));
    const before = await count();
    const r = await rawExchange(`CONNECT nosuch.example:443 HTTP/1.1\r\n\r\n`, OUT());
    expect(r.statuses).toEqual([404]);
    expect(await count()).toBe(before + 1);
  });
});

describe("resource use", () => {
  test("many CONNECT tunnels (200, 50 at a time) all work, and idle tunnels do not block new ones", async () => {
    for (let batch = 0; batch < 4; batch++) {
      const rs = await Promise.all(Array.from({ length: 50 }, (_, i) => rawExchange(`${CONNECT}\r\n${call(`/many-${batch}-${i}`)}`, { ...OUT(), timeoutMs: 10000 })));
      expect(rs.filter((r) => r.statuses.join() !== "200,200").length).toBe(0);
    }
    // 100 tunnels opened and left silent, then a new one still works.
    const held: Socket[] = [];
    try {
      for (let i = 0; i < 100; i++)
        held.push(await Bun.connect({ hostname: "127.0.0.1", port: ordersProxy.ports.outbound, socket: { data() {}, open(s) { s.write(`${CONNECT}\r\n`); } } }));
      await Bun.sleep(200);
      await stillServes();
    } finally {
      for (const s of held) s.end();
    }
  }, 60000);

  test("a silent tunnel is closed by the idle timeout; a slowloris CONNECT head gets 408", async () => {
    const idle = rawExchange(`${CONNECT}\r\n`, { ...OUT(), quietMs: 60000, timeoutMs: 32000 });
    const slow = (async () => {
      let closed = false;
      let text = "";
      const started = Date.now();
      const sock = await Bun.connect({
        hostname: "127.0.0.1",
        port: ordersProxy.ports.outbound,
        socket: { data(_s, d) { text += Buffer.from(d).toString("latin1"); }, close() { closed = true; }, error() { closed = true; } },
      });
      sock.write("CONNECT payments:80 HTTP/1.1\r\n");
      for (let i = 0; i < 32 && !closed; i++) {
        await Bun.sleep(1000);
        if (!closed) sock.write(`X-Trickle-${i}: y\r\n`);
      }
      if (!closed) sock.end();
      return { closed, text, seconds: (Date.now() - started) / 1000 };
    })();
    const [i, s] = await Promise.all([idle, slow]);
    expect({ statuses: i.statuses, closed: i.closed }).toEqual({ statuses: [200], closed: true });
    expect(s.closed).toBe(true);
    expect(statusesOf(s.text)).toEqual([408]);
    expect(s.seconds).toBeLessThan(25);
  }, 60000);
});

describe("inbound", () => {
  test("the mTLS inbound refuses CONNECT in every form, and a lower-case one, with 400", async () => {
    const tls = clientTls(fx, "orders");
    for (const line of ["CONNECT payments:80 HTTP/1.1", "CONNECT 127.0.0.1:80 HTTP/1.1", "connect payments:80 HTTP/1.1"]) {
      const r = await rawExchange(`${line}\r\nHost: payments:80\r\n\r\n${call("/inbound-connect")}`, { port: paymentsProxy.ports.inbound, tls });
      expect({ line, statuses: r.statuses, closed: r.closed }).toEqual({ line, statuses: [400], closed: true });
    }
    expect(seenPath("/inbound-connect")).toBe(0);
  });
});
