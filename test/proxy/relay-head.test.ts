import { describe, expect, test } from "bun:test";
import { relayedHead, sendableAsReceived, statusLineReusable } from "../../src/proxy/relay-head.ts";
import { findHeadEnd, parseResponseHead } from "../../src/proxy/transport/h1/response-head.ts";

function parse(text: string | Buffer) {
  const buf = typeof text === "string" ? Buffer.from(text, "latin1") : text;
  return parseResponseHead(buf, 0, findHeadEnd(buf, 0, 0));
}

/** The relayed head as latin1 text, with the status line copied when it can be. */
function relay(text: string | Buffer, tail = "content-length: 0\r\n\r\n", reserve = 0, transient = false, fromProxy = true) {
  const head = parse(text);
  const line = statusLineReusable(head) ? undefined : `HTTP/1.1 ${head.status} REBUILT\r\n`;
  const { bytes, used } = relayedHead(head, fromProxy, line, tail, reserve, transient);
  return { text: bytes.subarray(0, used).toString("latin1"), bytes, used };
}

describe("relayedHead", () => {
  test("copies the status line and every end-to-end field as received, case and order kept", () => {
    const { text } = relay("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Custom:  spaced value \r\nset-cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n");
    expect(text).toBe("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Custom:  spaced value \r\nset-cookie: a=1\r\nSet-Cookie: b=2\r\ncontent-length: 0\r\n\r\n");
  });

  test("drops hop-by-hop, identity and framing fields in any case, first, last or side by side", () => {
    const { text } = relay(
      "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nA: 1\r\nTE: trailers\r\nTrailer: x\r\nUpgrade: foo\r\n" +
        "Proxy-Authenticate: Basic\r\nPROXY-AUTHORIZATION: x\r\nB: 2\r\nX-Mesh-Client-Id: spiffe://evil/ns/x/sa/y\r\nx-forwarded-client-cert: By=x\r\n" +
        "L5D-Client-Id: y\r\nContent-Length: 5\r\n\r\n",
    );
    expect(text).toBe("HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\ncontent-length: 0\r\n\r\n");
  });

  test("drops a chunked response's transfer-encoding (the proxy frames the body itself)", () => {
    const { text } = relay("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nVary: accept\r\n\r\n", "transfer-encoding: chunked\r\n\r\n");
    expect(text).toBe("HTTP/1.1 200 OK\r\nVary: accept\r\ntransfer-encoding: chunked\r\n\r\n");
  });

  test("drops whatever the upstream's Connection lists, whatever the case", () => {
    const { text } = relay("HTTP/1.1 200 OK\r\nX-Secret: 1\r\nConnection: X-SECRET, x-other\r\nx-keep: 2\r\nX-Other: 3\r\n\r\n");
    expect(text).toBe("HTTP/1.1 200 OK\r\nx-keep: 2\r\ncontent-length: 0\r\n\r\n");
  });

  test("a head with no fields, or with every field dropped", () => {
    expect(relay("HTTP/1.1 204 No Content\r\n\r\n", "\r\n").text).toBe("HTTP/1.1 204 No Content\r\n\r\n");
    expect(relay("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").text).toBe("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
  });

  test("obs-text in a value goes out byte for byte", () => {
    const raw = Buffer.concat([Buffer.from("HTTP/1.1 200 OK\r\nX-Name: caf", "latin1"), Buffer.from([0xe9, 0xff, 0x80]), Buffer.from("\r\n\r\n", "latin1")]);
    const { bytes, used } = relay(raw);
    const out = bytes.subarray(0, used);
    expect(out.indexOf(Buffer.from([0x66, 0xe9, 0xff, 0x80, 0x0d, 0x0a]))).toBeGreaterThan(0);
  });

  test("an HTTP/1.0 status line, or one without SP before the reason, is rebuilt", () => {
    expect(statusLineReusable(parse("HTTP/1.0 200 OK\r\n\r\n"))).toBe(false);
    expect(statusLineReusable(parse("HTTP/1.1 200\r\n\r\n"))).toBe(false);
    expect(statusLineReusable(parse("HTTP/1.1 200 \r\n\r\n"))).toBe(true);
    expect(relay("HTTP/1.0 200 OK\r\nA: 1\r\n\r\n").text).toBe("HTTP/1.1 200 REBUILT\r\nA: 1\r\ncontent-length: 0\r\n\r\n");
  });

  test("sized exactly: the head, then `reserve` bytes of room", () => {
    const { bytes, text } = relay("HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nA: 1\r\n\r\n", "content-length: 100\r\n\r\n", 100);
    expect(text).toBe("HTTP/1.1 200 OK\r\nA: 1\r\ncontent-length: 100\r\n\r\n");
    expect(bytes.length).toBe(text.length + 100);
  });

  test("a head written at once is built in one shared buffer; one that is held, or too large for it, in its own", () => {
    const a = relay("HTTP/1.1 200 OK\r\nA: 1\r\n\r\n", "content-length: 5\r\n\r\n", 5, true);
    const b = relay("HTTP/1.1 200 OK\r\nB: 2\r\n\r\n", "content-length: 5\r\n\r\n", 5, true);
    expect(b.bytes).toBe(a.bytes);
    expect(b.text).toBe("HTTP/1.1 200 OK\r\nB: 2\r\ncontent-length: 5\r\n\r\n");
    expect(relay("HTTP/1.1 200 OK\r\nA: 1\r\n\r\n", "content-length: 5\r\n\r\n", 5, false).bytes).not.toBe(a.bytes);
    const large = relay("HTTP/1.1 200 OK\r\nA: 1\r\n\r\n", "content-length: 20000\r\n\r\n", 20000, true);
    expect(large.bytes).not.toBe(a.bytes);
    expect(large.bytes.length).toBe(large.used + 20000);
  });

  test("the head a relay copies is the head that was parsed, even when it sits mid-buffer", () => {
    const buf = Buffer.from("junkHTTP/1.1 201 Created\r\nLocation: /x\r\nConnection: close\r\n\r\nbody", "latin1");
    const head = parseResponseHead(buf, 4, findHeadEnd(buf, 4, 4));
    expect(head.headers).toEqual([["Location", "/x"], ["Connection", "close"]]);
    expect(head.statusText).toBe("Created");
    const { bytes, used } = relayedHead(head, true, undefined, "\r\n", 0, false);
    expect(bytes.toString("latin1", 0, used)).toBe("HTTP/1.1 201 Created\r\nLocation: /x\r\n\r\n");
  });

  test("a sidecar's answer headers go on from a sidecar, and are dropped in any case from anything else", () => {
    const text = "HTTP/1.1 503 Service Unavailable\r\nX-Mesh-Error: overflow\r\nA: 1\r\nx-mesh-overflow: requests\r\nContent-Type: text/plain\r\n\r\n";
    expect(relay(text).text).toBe(`${text.slice(0, -2)}content-length: 0\r\n\r\n`);
    expect(relay(text, undefined, 0, false, false).text).toBe("HTTP/1.1 503 Service Unavailable\r\nA: 1\r\nContent-Type: text/plain\r\ncontent-length: 0\r\n\r\n");
  });
});

describe("sendableAsReceived: a head the client may get exactly as the upstream sent it", () => {
  const OK = "HTTP/1.1 200 OK\r\n";
  test("one plain Content-Length and nothing to drop: yes, whatever the case and order of the fields", () => {
    expect(sendableAsReceived(parse(`${OK}Content-Type: text/plain\r\nCONTENT-LENGTH: 100\r\nx-a: 1\r\n\r\n`), false)).toBe(true);
    expect(sendableAsReceived(parse(`${OK}content-length: 0\r\n\r\n`), false)).toBe(true);
    expect(sendableAsReceived(parse(`HTTP/1.1 404 \r\nContent-Length: 9\r\n\r\n`), false)).toBe(true);
  });

  test("anything this proxy would change or frame itself: no", () => {
    const cases = [
      `${OK}\r\n`, // no length: close-delimited
      `${OK}Transfer-Encoding: chunked\r\n\r\n`,
      `${OK}Content-Length: 007\r\n\r\n`, // leading zeros
      `${OK}Content-Length: 7\r\nContent-Length: 7\r\n\r\n`, // the same length twice
      `${OK}Content-Length: 7\r\nConnection: keep-alive\r\n\r\n`,
      `${OK}Content-Length: 7\r\nKeep-Alive: timeout=5\r\n\r\n`,
      `${OK}Content-Length: 7\r\nX-Mesh-Client-Id: spiffe://evil/ns/x/sa/y\r\n\r\n`,
      `${OK}Content-Length: 7\r\nl5d-client-id: y\r\n\r\n`,
      `${OK}Content-Length: 7\r\nProxy-Authenticate: Basic\r\n\r\n`,
      "HTTP/1.0 200 OK\r\nContent-Length: 7\r\n\r\n",
      "HTTP/1.1 200\r\nContent-Length: 7\r\n\r\n", // no SP before the (empty) reason
    ];
    for (const text of cases) expect([text, sendableAsReceived(parse(text), true)]).toEqual([text, false]);
  });

  test("a sidecar's answer headers: as received from a sidecar, not from anything else", () => {
    for (const field of ["X-Mesh-Error: overflow", "x-mesh-overflow: requests"]) {
      const head = parse(`${OK}Content-Length: 7\r\n${field}\r\n\r\n`);
      expect([field, sendableAsReceived(head, true), sendableAsReceived(head, false)]).toEqual([field, true, false]);
    }
  });
});
