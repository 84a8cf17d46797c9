/**
 * HTTP/1 framing and request smuggling (threats.md "HTTP/1 framing"), against real
 * proxies on loopback: the outbound listener over plain TCP, and the inbound mTLS
 * listener over TLS with a valid client certificate. Every byte is sent raw.
 *
 * For each malformed request: the answer is the expected 4xx (505 for an HTTP version
 * other than 1.0 and 1.1) with `x-mesh-error: bad-request`, and the connection is
 * closed; nothing reaches the service; and the proxy then serves a good request on a
 * new connection. Each refusal is counted in mesh_requests_refused_total under the
 * `reason` of its case (the labels of src/proxy/transport/h1/request-parse.ts, and
 * "body-framing" for a chunked body the listener's decoder refuses).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { clientTls, eventually, recordingService, type RecordingService } from "../helpers/data-plane.ts";
import { MeshFixture } from "../helpers/mesh-fixture.ts";
import { exchangeWith, type ClientTls, type RawOptions, type RawResult } from "../helpers/raw-http.ts";

interface Case {
  name: string;
  bytes: string;
  /** The mesh_requests_refused_total label it is counted under. */
  reason: string;
  status: number;
  /**
   * Bad chunk framing is found only while the body streams, so the proxy may already
   * have started the upstream request: the service may see it begin, but its body must
   * fail (exactly what a client disconnecting mid-body causes).
   */
  bodyFails?: true;
  /** The outbound takes CONNECT to a known service as an HTTP proxy does (connect.test.ts); the inbound never. */
  inboundOnly?: true;
}

const H = "Host: payments\r\n";
const POST = `POST /p HTTP/1.1\r\n${H}`;
const GET = `GET /g HTTP/1.1\r\n${H}`;
const CHUNKED_ABCD = "4\r\nabcd\r\n0\r\n\r\n";
const SMUGGLED = `GET /smuggled HTTP/1.1\r\n${H}\r\n`;

const CASES: Case[] = [
  // Content-Length and Transfer-Encoding together, either order.
  { name: "CL then TE", bytes: `${POST}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`, reason: "transfer-encoding", status: 400 },
  { name: "TE then CL", bytes: `${POST}Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n${CHUNKED_ABCD}`, reason: "transfer-encoding", status: 400 },
  { name: "TE identity with CL", bytes: `${POST}Transfer-Encoding: identity\r\nContent-Length: 4\r\n\r\nabcd`, reason: "transfer-encoding", status: 400 },
  // Content-Length values.
  { name: "two different Content-Lengths", bytes: `${POST}Content-Length: 4\r\nContent-Length: 5\r\n\r\nabcde`, reason: "content-length", status: 400 },
  { name: "two identical Content-Lengths (Bun merges them to '4, 4')", bytes: `${POST}Content-Length: 4\r\nContent-Length: 4\r\n\r\nabcd`, reason: "content-length", status: 400 },
  { name: "Content-Length list in one field", bytes: `${POST}Content-Length: 4, 4\r\n\r\nabcd`, reason: "content-length", status: 400 },
  { name: "empty Content-Length", bytes: `${POST}Content-Length: \r\n\r\nabcd`, reason: "content-length", status: 400 },
  { name: "signed Content-Length +4", bytes: `${POST}Content-Length: +4\r\n\r\nabcd`, reason: "content-length", status: 400 },
  { name: "signed Content-Length -4", bytes: `${POST}Content-Length: -4\r\n\r\nabcd`, reason: "content-length", status: 400 },
  { name: "hex Content-Length", bytes: `${POST}Content-Length: 0x4\r\n\r\nabcd`, reason: "content-length", status: 400 },
  { name: "overflowing Content-Length (2^64 + 4)", bytes: `${POST}Content-Length: 18446744073709551620\r\n\r\nabcd`, reason: "content-length", status: 400 },
  { name: "Content-Length with inner space", bytes: `${POST}Content-Length: 1 2\r\n\r\nabcd`, reason: "content-length", status: 400 },
  // Disguised Transfer-Encoding.
  { name: "xchunked", bytes: `${POST}Transfer-Encoding: xchunked\r\n\r\n${CHUNKED_ABCD}`, reason: "transfer-encoding", status: 400 },
  { name: "chunked, chunked", bytes: `${POST}Transfer-Encoding: chunked, chunked\r\n\r\n${CHUNKED_ABCD}`, reason: "transfer-encoding", status: 400 },
  { name: "Transfer-Encoding twice", bytes: `${POST}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n${CHUNKED_ABCD}`, reason: "transfer-encoding", status: 400 },
  { name: "gzip, chunked", bytes: `${POST}Transfer-Encoding: gzip, chunked\r\n\r\n${CHUNKED_ABCD}`, reason: "transfer-encoding", status: 400 },
  { name: "chunked, gzip", bytes: `${POST}Transfer-Encoding: chunked, gzip\r\n\r\n${CHUNKED_ABCD}`, reason: "transfer-encoding", status: 400 },
  { name: "space before the colon", bytes: `${POST}Transfer-Encoding : chunked\r\n\r\n${CHUNKED_ABCD}`, reason: "header-name", status: 400 },
  { name: "vertical tab before chunked", bytes: `${POST}Transfer-Encoding: \x0bchunked\r\n\r\n${CHUNKED_ABCD}`, reason: "header-value", status: 400 },
  { name: "Transfer-Encoding on HTTP/1.0", bytes: `POST /p HTTP/1.0\r\n${H}Transfer-Encoding: chunked\r\n\r\n${CHUNKED_ABCD}`, reason: "transfer-encoding", status: 400 },
  // Line folding and line endings.
  { name: "obs-fold continuation", bytes: `${GET}X-A: a\r\n b\r\n\r\n`, reason: "header-name", status: 400 },
  { name: "obs-fold hiding Transfer-Encoding", bytes: `${POST}X-A: a\r\n Transfer-Encoding: chunked\r\n\r\n${CHUNKED_ABCD}`, reason: "header-name", status: 400 },
  { name: "bare LF line endings", bytes: `GET /g HTTP/1.1\n${H.replace("\r\n", "\n")}\n`, reason: "line-ending", status: 400 },
  { name: "bare LF inside the header block", bytes: `GET /g HTTP/1.1\r\nHost: payments\nX-A: b\r\n\r\n`, reason: "line-ending", status: 400 },
  { name: "bare CR inside the header block", bytes: `GET /g HTTP/1.1\r\nHost: payments\rX-A: b\r\n\r\n`, reason: "line-ending", status: 400 },
  { name: "bare CR ending the request line", bytes: `GET /g HTTP/1.1\r${H}\r\n`, reason: "line-ending", status: 400 },
  // Chunk framing.
  { name: "chunk size not hex", bytes: `${POST}Transfer-Encoding: chunked\r\n\r\nzz\r\nabcd\r\n0\r\n\r\n`, reason: "body-framing", status: 400, bodyFails: true },
  { name: "chunk size overflowing 64 bits", bytes: `${POST}Transfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFF1\r\nabcd\r\n0\r\n\r\n`, reason: "body-framing", status: 400, bodyFails: true },
  { name: "chunk data not followed by CRLF", bytes: `${POST}Transfer-Encoding: chunked\r\n\r\n4\r\nabcdXX0\r\n\r\n`, reason: "body-framing", status: 400, bodyFails: true },
  { name: "chunk longer than its size", bytes: `${POST}Transfer-Encoding: chunked\r\n\r\n4\r\nabcdef\r\n0\r\n\r\n`, reason: "body-framing", status: 400, bodyFails: true },
  { name: "chunk lines ending in bare LF", bytes: `${POST}Transfer-Encoding: chunked\r\n\r\n4\nabcd\n0\n\n`, reason: "body-framing", status: 400, bodyFails: true },
  { name: "chunk size with trailing space", bytes: `${POST}Transfer-Encoding: chunked\r\n\r\n4 \r\nabcd\r\n0\r\n\r\n`, reason: "body-framing", status: 400, bodyFails: true },
  { name: "negative chunk size", bytes: `${POST}Transfer-Encoding: chunked\r\n\r\n-4\r\nabcd\r\n0\r\n\r\n`, reason: "body-framing", status: 400, bodyFails: true },
  { name: "chunk size 0x4", bytes: `${POST}Transfer-Encoding: chunked\r\n\r\n0x4\r\nabcd\r\n0\r\n\r\n`, reason: "body-framing", status: 400, bodyFails: true },
  { name: "bad second chunk in the same packet", bytes: `${POST}Transfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\nzz\r\nabcd\r\n0\r\n\r\n`, reason: "body-framing", status: 400, bodyFails: true },
  // Control characters in values.
  { name: "NUL in a header value", bytes: `${GET}X-A: a\x00b\r\n\r\n`, reason: "header-value", status: 400 },
  { name: "0x01 in a header value", bytes: `${GET}X-A: a\x01b\r\n\r\n`, reason: "header-value", status: 400 },
  { name: "ESC in a header value", bytes: `${GET}X-A: a\x1bb\r\n\r\n`, reason: "header-value", status: 400 },
  { name: "DEL in a header value (Bun keeps it)", bytes: `${GET}X-A: a\x7fb\r\n\r\n`, reason: "header-value", status: 400 },
  // Header names.
  { name: "empty header name", bytes: `${GET}: v\r\n\r\n`, reason: "header-name", status: 400 },
  { name: "space inside a header name", bytes: `${GET}X A: v\r\n\r\n`, reason: "header-name", status: 400 },
  { name: "separator in a header name", bytes: `${GET}X(A: v\r\n\r\n`, reason: "header-name", status: 400 },
  { name: "NUL in a header name", bytes: `${GET}X\x00A: v\r\n\r\n`, reason: "header-name", status: 400 },
  { name: "header line without a colon", bytes: `${GET}XA\r\n\r\n`, reason: "header-name", status: 400 },
  // Host.
  { name: "two different Hosts (Bun merges them)", bytes: `GET /g HTTP/1.1\r\nHost: payments\r\nHost: evil\r\n\r\n`, reason: "host", status: 400 },
  { name: "the same Host twice", bytes: `GET /g HTTP/1.1\r\nHost: payments\r\nHost: payments\r\n\r\n`, reason: "host", status: 400 },
  { name: "no Host on HTTP/1.1", bytes: `GET /g HTTP/1.1\r\n\r\n`, reason: "host", status: 400 },
  { name: "no Host on HTTP/1.0", bytes: `GET /g HTTP/1.0\r\n\r\n`, reason: "host", status: 400 },
  { name: "empty Host", bytes: `GET /g HTTP/1.1\r\nHost:\r\n\r\n`, reason: "host", status: 400 },
  { name: "Host with userinfo", bytes: `GET /g HTTP/1.1\r\nHost: evil@payments\r\n\r\n`, reason: "host", status: 400 },
  { name: "Host with a space", bytes: `GET /g HTTP/1.1\r\nHost: payments evil\r\n\r\n`, reason: "host", status: 400 },
  { name: "Host with a path", bytes: `GET /g HTTP/1.1\r\nHost: payments/evil\r\n\r\n`, reason: "host", status: 400 },
  // Bytes pipelined behind a framing error, or hidden in a body Bun ignores.
  { name: "request pipelined after conflicting Content-Lengths", bytes: `${POST}Content-Length: 4\r\nContent-Length: 5\r\n\r\n${SMUGGLED}`, reason: "content-length", status: 400 },
  { name: "request pipelined after CL+TE", bytes: `${POST}Content-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n${SMUGGLED}`, reason: "transfer-encoding", status: 400 },
  { name: "request hidden in a GET body (Bun drops GET bodies)", bytes: `${GET}Content-Length: ${SMUGGLED.length}\r\n\r\n${SMUGGLED}`, reason: "body-on-get", status: 400 },
  { name: "GET with a chunked body", bytes: `${GET}Transfer-Encoding: chunked\r\n\r\n${CHUNKED_ABCD}`, reason: "body-on-get", status: 400 },
  { name: "HEAD with a body", bytes: `HEAD /g HTTP/1.1\r\n${H}Content-Length: 4\r\n\r\nabcd`, reason: "body-on-get", status: 400 },
  // Upgrades and tunnels.
  { name: "Upgrade: h2c", bytes: `${GET}Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n`, reason: "h2c", status: 400 },
  { name: "HTTP2-Settings without Upgrade", bytes: `${GET}HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n`, reason: "h2c", status: 400 },
  { name: "CONNECT", bytes: `CONNECT payments:80 HTTP/1.1\r\nHost: payments:80\r\n\r\n`, reason: "target", status: 400, inboundOnly: true },
  { name: "CONNECT target that would become an upstream URL's userinfo", bytes: `CONNECT x:@127.0.0.1:9/p HTTP/1.1\r\n${H}\r\n`, reason: "target", status: 400 },
  // Request lines.
  { name: "target without a leading slash", bytes: `GET abc HTTP/1.1\r\n${H}\r\n`, reason: "target", status: 400 },
  { name: "asterisk-form on GET", bytes: `GET * HTTP/1.1\r\n${H}\r\n`, reason: "target", status: 400 },
  { name: "HTTP/1.2", bytes: `GET /g HTTP/1.2\r\n${H}\r\n`, reason: "version", status: 505 },
  { name: "HTTP/0.9 request line", bytes: `GET /g\r\n\r\n`, reason: "request-line", status: 400 },
  { name: "space inside the target", bytes: `GET /a b HTTP/1.1\r\n${H}\r\n`, reason: "request-line", status: 400 },
];

const fx = new MeshFixture();
let svc: RecordingService;
let tls: ClientTls;
const sides: Record<"outbound" | "inbound", { port: number; tls?: ClientTls; admin: number }> = {} as never;

beforeAll(async () => {
  await fx.init();
  await fx.issue("orders");
  await fx.issue("payments");
  svc = recordingService();
  const payments = await fx.proxy("payments", svc.url);
  const orders = await fx.proxy("orders", fx.echo("orders").url, fx.config("orders", { payments: [payments.ports.inbound] }));
  tls = clientTls(fx, "orders");
  sides.outbound = { port: orders.ports.outbound, admin: orders.ports.admin };
  sides.inbound = { port: payments.ports.inbound, tls, admin: payments.ports.admin };
});
afterAll(async () => {
  await fx.close();
  svc?.stop();
});

function send(side: "outbound" | "inbound", bytes: string, extra: Partial<RawOptions> = {}): Promise<RawResult> {
  return exchangeWith(sides[side], bytes, extra);
}

/** A request that must be forwarded: 200 from the service, which saw it. */
async function expectServes(side: "outbound" | "inbound"): Promise<void> {
  const before = svc.hits;
  const r = await send(side, `GET /ok HTTP/1.1\r\n${H}Connection: close\r\n\r\n`);
  expect(r.statuses).toEqual([200]);
  expect(svc.hits).toBe(before + 1);
  expect(svc.seen.at(-1)?.path).toBe("/ok");
}

/** mesh_requests_refused_total of the inbound proxy, by reason. */
async function refusedByReason(): Promise<Record<string, number>> {
  const text = await (await fetch(`http://127.0.0.1:${sides.inbound.admin}/metrics`)).text();
  const out: Record<string, number> = {};
  for (const m of text.matchAll(/^mesh_requests_refused_total\{direction="inbound",reason="([^"]+)"\} (\d+)$/gm)) out[m[1]!] = Number(m[2]);
  return out;
}

function headerOf(text: string, name: string): string | undefined {
  const head = text.split("\r\n\r\n")[0] ?? "";
  const line = head.split("\r\n").find((l) => l.toLowerCase().startsWith(name + ":"));
  return line?.slice(name.length + 1).trim();
}

for (const side of ["outbound", "inbound"] as const) {
  describe(`${side} listener refuses malformed framing; nothing reaches the service`, () => {
    let refusedAtStart: Record<string, number> = {};
    beforeAll(async () => {
      refusedAtStart = await refusedByReason();
    });
    const cases = CASES.filter((c) => side === "inbound" || !c.inboundOnly);
    for (const c of cases) {
      test(`${c.name} → ${c.status} (${c.reason})`, async () => {
        const before = svc.hits;
        const r = await send(side, c.bytes);
        expect(r.error).toBeUndefined();
        expect(r.statuses).toEqual([c.status]);
        expect(r.closed).toBe(true);
        expect(headerOf(r.text, "x-mesh-error")).toBe("bad-request");
        await Bun.sleep(50); // a forwarded request would have reached the service by now
        if (c.bodyFails) {
          expect(await eventually(() => svc.seen.slice(before).every((s) => s.body !== "pending"))).toBe(true);
          expect(svc.seen.slice(before).filter((s) => s.body === "complete")).toEqual([]);
        } else expect(svc.hits).toBe(before);
        expect(svc.seen.some((s) => s.path === "/smuggled")).toBe(false);
        await expectServes(side);
      });
    }

    test("a bad chunk arriving after the body started streaming: the service never sees a complete body", async () => {
      const before = svc.seen.length;
      const r = await send(side, `${POST}Transfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n`, {
        thenWrite: { afterMs: 200, bytes: `zz\r\nabcd\r\n0\r\n\r\n${SMUGGLED}` },
      });
      expect(r.closed).toBe(true);
      expect(r.statuses.every((s) => s >= 400)).toBe(true);
      // The handler may already have started forwarding; if so, the body it sent must have failed.
      expect(await eventually(() => svc.seen.slice(before).every((s) => s.body !== "pending"))).toBe(true);
      expect(svc.seen.slice(before).filter((s) => s.body === "complete")).toEqual([]);
      expect(svc.seen.some((s) => s.path === "/smuggled")).toBe(false);
      await expectServes(side);
    });

    test("a request placed in the trailer section is never executed", async () => {
      // The trailer section is parsed as fields: a request line there is not a field, so
      // the body is malformed (400, close). The POST may have been started upstream; its
      // body must then fail, and the smuggled request is never executed.
      const before = svc.seen.length;
      const r = await send(side, `${POST}Transfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n${SMUGGLED}`);
      expect(r.statuses.at(-1)).toBe(400);
      expect(r.statuses.filter((s) => s !== 200 && s !== 400)).toEqual([]);
      expect(r.closed).toBe(true);
      await Bun.sleep(100);
      const seen = svc.seen.slice(before);
      expect(seen.every((s) => s.path === "/p" && s.text === "abcd" && s.body === "complete")).toBe(true);
      expect(seen.length).toBeLessThanOrEqual(1);
      expect(svc.seen.some((s) => s.path === "/smuggled")).toBe(false);
      await expectServes(side);
    });

    test("tolerated variants are forwarded with the body decoded exactly once", async () => {
      // Optional whitespace around a field value, letter case and chunk extensions are valid
      // HTTP (RFC 9110 §5.5, §7.8; RFC 9112 §7.1.1); the proxy re-frames the body for the
      // service, so no second parser can read these bytes differently.
      for (const te of ["chunked ", "\tchunked", "CHUNKED"]) {
        const before = svc.seen.length;
        const r = await send(side, `${POST}Transfer-Encoding: ${te}\r\nConnection: close\r\n\r\n4;ext=1\r\nabcd\r\n0\r\n\r\n`);
        expect(r.statuses).toEqual([200]);
        expect(svc.seen.slice(before).map((s) => [s.path, s.text, s.body])).toEqual([["/p", "abcd", "complete"]]);
        expect(svc.seen.at(-1)?.headers["transfer-encoding"] === "chunked" || svc.seen.at(-1)?.headers["content-length"] === "4").toBe(true);
      }
    });

    test("the HTTP/2 preface opens HTTP/2 only as a connection's first bytes: after a request it is refused (505)", async () => {
      const r = await send(side, `GET /ok HTTP/1.1\r\n${H}\r\nPRI * HTTP/2.0\r\n\r\nSM\r\n\r\n${SMUGGLED}`);
      expect(r.statuses).toEqual([200, 505]);
      expect(r.closed).toBe(true);
      await Bun.sleep(50);
      expect(svc.seen.some((s) => s.path === "/smuggled")).toBe(false);
    });

    test("a connection that opens with the HTTP/2 preface is HTTP/2: HTTP/1.1 bytes after it reach nothing", async () => {
      const before = svc.hits;
      const r = await send(side, `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n${SMUGGLED}`);
      expect(r.statuses).toEqual([]);
      expect(r.closed).toBe(true);
      await Bun.sleep(50);
      expect(svc.hits).toBe(before);
      await expectServes(side);
    });

    test("an upgrade to h2c never turns the connection into a tunnel", async () => {
      const before = svc.hits;
      const preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
      const r = await send(side, `${GET}Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n`, {
        thenWrite: { afterMs: 100, bytes: preface },
      });
      expect(r.statuses).not.toContain(101);
      expect(r.statuses).toEqual([400]);
      expect(r.closed).toBe(true);
      await Bun.sleep(50);
      expect(svc.hits).toBe(before);
    });

    if (side === "inbound")
      test("every refusal is counted by its reason", async () => {
        const now = await refusedByReason();
        const delta = Object.fromEntries(Object.entries(now).map(([k, v]) => [k, v - (refusedAtStart[k] ?? 0)]).filter(([, v]) => v !== 0));
        const expected: Record<string, number> = {};
        for (const c of cases) expected[c.reason] = (expected[c.reason] ?? 0) + 1;
        // The tests after the table: a bad chunk mid-stream and a request in the trailers
        // (body-framing), the h2c upgrade, and an HTTP/2 preface after a request (version).
        expected["body-framing"]! += 2;
        expected.version! += 1;
        expected.h2c! += 1;
        expect(delta).toEqual(expected);
      });
  });
}

// Well-formed requests that share reads: a body and the next request arrive with a head,
// and a head is split across reads after another request in the same read. Each must
// reach the service whole, in order, with its own body.
for (const side of ["outbound", "inbound"] as const)
  test(`${side}: pipelined requests sharing reads are served in order, each with its body`, async () => {
    const before = svc.seen.length;
    const first = `POST /a HTTP/1.1\r\n${H}Content-Length: 5\r\n\r\nhello${GET}\r\nPOST /c HTTP/1.1\r\n${H}Content-Le`;
    const rest = `ngth: 3\r\nConnection: close\r\n\r\nxyz`;
    const r = await send(side, first, { thenWrite: { afterMs: 100, bytes: rest }, quietMs: 600 });
    expect(r.error).toBeUndefined();
    expect(r.statuses).toEqual([200, 200, 200]);
    expect(r.closed).toBe(true);
    const seen = svc.seen.slice(before).map((x) => [x.method, x.path, x.text, x.body]);
    expect(seen).toEqual([
      ["POST", "/a", "hello", "complete"],
      ["GET", "/g", "", "complete"],
      ["POST", "/c", "xyz", "complete"],
    ]);
  });

test("after every case, both proxies are alive and serve", async () => {
  await expectServes("outbound");
  await expectServes("inbound");
});
