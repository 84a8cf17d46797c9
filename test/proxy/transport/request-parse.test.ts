/**
 * The raw-socket server's request-head parser, over bytes: every malformed head of
 * test/proxy/framing.test.ts and test/proxy/limits.test.ts is refused with a fixed
 * status and reason, and accepted heads come out exactly as the proxy must forward them.
 */
import { describe, expect, test } from "bun:test";
import { seeded } from "../../helpers/prng.ts";
import {
  fieldValue,
  findRequestHeadEnd,
  MAX_REQUEST_HEAD_BYTES,
  MAX_REQUEST_HEADERS,
  parseRequestHead,
  RequestHeadError,
  type RequestHead,
} from "../../../src/proxy/transport/h1/request-parse.ts";

const H = "Host: payments\r\n";
const POST = `POST /p HTTP/1.1\r\n${H}`;
const GET = `GET /g HTTP/1.1\r\n${H}`;
const SMUGGLED = `GET /smuggled HTTP/1.1\r\n${H}\r\n`;

/** `previous`: the head parsed before on the same connection. */
function parse(text: string, previous?: RequestHead): RequestHead {
  const buf = Buffer.from(text, "latin1");
  const end = findRequestHeadEnd(buf, 0, 0);
  if (end < 0) throw new Error("incomplete head");
  return parseRequestHead(buf, 0, end, previous);
}

/** [status, reason] of the refusal, or "accepted". */
function refusal(text: string, previous?: RequestHead): [number, string] | "accepted" {
  try {
    parse(text, previous);
    return "accepted";
  } catch (err) {
    if (!(err instanceof RequestHeadError)) throw err;
    expect(err.message.length).toBeGreaterThan(0);
    return [err.status, err.reason];
  }
}

const many = (n: number, size = 1) => Array.from({ length: n }, (_, i) => `x-h${i}: ${"v".repeat(size)}\r\n`).join("");

// [name, bytes, status, reason]; the first group is framing.test.ts's CASES (head-level ones).
const REFUSED: [string, string, number, string][] = [
  ["CL then TE", `${POST}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n`, 400, "transfer-encoding"],
  ["TE then CL", `${POST}Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n`, 400, "transfer-encoding"],
  ["TE identity with CL", `${POST}Transfer-Encoding: identity\r\nContent-Length: 4\r\n\r\n`, 400, "transfer-encoding"],
  ["two different Content-Lengths", `${POST}Content-Length: 4\r\nContent-Length: 5\r\n\r\n`, 400, "content-length"],
  ["two identical Content-Lengths", `${POST}Content-Length: 4\r\nContent-Length: 4\r\n\r\n`, 400, "content-length"],
  ["Content-Length list in one field", `${POST}Content-Length: 4, 4\r\n\r\n`, 400, "content-length"],
  ["empty Content-Length", `${POST}Content-Length: \r\n\r\n`, 400, "content-length"],
  ["signed Content-Length +4", `${POST}Content-Length: +4\r\n\r\n`, 400, "content-length"],
  ["signed Content-Length -4", `${POST}Content-Length: -4\r\n\r\n`, 400, "content-length"],
  ["hex Content-Length", `${POST}Content-Length: 0x4\r\n\r\n`, 400, "content-length"],
  ["overflowing Content-Length (2^64 + 4)", `${POST}Content-Length: 18446744073709551620\r\n\r\n`, 400, "content-length"],
  ["Content-Length of 16 digits", `${POST}Content-Length: 1000000000000000\r\n\r\n`, 400, "content-length"],
  ["Content-Length with inner space", `${POST}Content-Length: 1 2\r\n\r\n`, 400, "content-length"],
  ["xchunked", `${POST}Transfer-Encoding: xchunked\r\n\r\n`, 400, "transfer-encoding"],
  ["identity", `${POST}Transfer-Encoding: identity\r\n\r\n`, 400, "transfer-encoding"],
  ["chunked, chunked", `${POST}Transfer-Encoding: chunked, chunked\r\n\r\n`, 400, "transfer-encoding"],
  ["Transfer-Encoding twice", `${POST}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n`, 400, "transfer-encoding"],
  ["gzip, chunked", `${POST}Transfer-Encoding: gzip, chunked\r\n\r\n`, 400, "transfer-encoding"],
  ["chunked, gzip", `${POST}Transfer-Encoding: chunked, gzip\r\n\r\n`, 400, "transfer-encoding"],
  ["space before the colon", `${POST}Transfer-Encoding : chunked\r\n\r\n`, 400, "header-name"],
  // A control byte is refused in any value, before its header's meaning is looked at.
  ["vertical tab before chunked", `${POST}Transfer-Encoding: \x0bchunked\r\n\r\n`, 400, "header-value"],
  ["Transfer-Encoding on HTTP/1.0", `POST /p HTTP/1.0\r\n${H}Transfer-Encoding: chunked\r\n\r\n`, 400, "transfer-encoding"],
  ["obs-fold continuation", `${GET}X-A: a\r\n b\r\n\r\n`, 400, "header-name"],
  ["obs-fold with a tab", `${GET}X-A: a\r\n\tb\r\n\r\n`, 400, "header-name"],
  ["obs-fold hiding Transfer-Encoding", `${POST}X-A: a\r\n Transfer-Encoding: chunked\r\n\r\n`, 400, "header-name"],
  ["whitespace line before the first header", `GET /g HTTP/1.1\r\n \r\n${H}\r\n`, 400, "header-name"],
  ["bare LF line endings", `GET /g HTTP/1.1\n${H.replace("\r\n", "\n")}\n`, 400, "line-ending"],
  ["bare LF inside the header block", `GET /g HTTP/1.1\r\nHost: payments\nX-A: b\r\n\r\n`, 400, "line-ending"],
  ["bare CR inside the header block", `GET /g HTTP/1.1\r\nHost: payments\rX-A: b\r\n\r\n`, 400, "line-ending"],
  ["bare CR ending the request line", `GET /g HTTP/1.1\r${H}\r\n`, 400, "line-ending"],
  ["bare CR inside a value", `${GET}X-A: a\rb\r\n\r\n`, 400, "line-ending"],
  ["bare LF as the first byte", `\nGET /g HTTP/1.1\r\n${H}\r\n`, 400, "line-ending"],
  ["NUL in a header value", `${GET}X-A: a\x00b\r\n\r\n`, 400, "header-value"],
  ["0x01 in a header value", `${GET}X-A: a\x01b\r\n\r\n`, 400, "header-value"],
  ["ESC in a header value", `${GET}X-A: a\x1bb\r\n\r\n`, 400, "header-value"],
  ["DEL in a header value", `${GET}X-A: a\x7fb\r\n\r\n`, 400, "header-value"],
  ["empty header name", `${GET}: v\r\n\r\n`, 400, "header-name"],
  ["space inside a header name", `${GET}X A: v\r\n\r\n`, 400, "header-name"],
  ["separator in a header name", `${GET}X(A: v\r\n\r\n`, 400, "header-name"],
  ["NUL in a header name", `${GET}X\x00A: v\r\n\r\n`, 400, "header-name"],
  ["header line without a colon", `${GET}XA\r\n\r\n`, 400, "header-name"],
  ["two different Hosts", `GET /g HTTP/1.1\r\nHost: payments\r\nHost: evil\r\n\r\n`, 400, "host"],
  ["the same Host twice", `GET /g HTTP/1.1\r\nHost: payments\r\nHost: payments\r\n\r\n`, 400, "host"],
  ["no Host on HTTP/1.1", `GET /g HTTP/1.1\r\n\r\n`, 400, "host"],
  ["no Host on HTTP/1.0", `GET /g HTTP/1.0\r\n\r\n`, 400, "host"],
  ["empty Host", `GET /g HTTP/1.1\r\nHost:\r\n\r\n`, 400, "host"],
  ["Host with userinfo", `GET /g HTTP/1.1\r\nHost: evil@payments\r\n\r\n`, 400, "host"],
  ["Host with a space", `GET /g HTTP/1.1\r\nHost: payments evil\r\n\r\n`, 400, "host"],
  ["Host with a path", `GET /g HTTP/1.1\r\nHost: payments/evil\r\n\r\n`, 400, "host"],
  ["Host with a six-digit port", `GET /g HTTP/1.1\r\nHost: payments:123456\r\n\r\n`, 400, "host"],
  ["Host with a port past 65535", `GET /g HTTP/1.1\r\nHost: payments:65536\r\n\r\n`, 400, "host"],
  ["Host with port 99999", `GET /g HTTP/1.1\r\nHost: payments:99999\r\n\r\n`, 400, "host"],
  ["Host list", `GET /g HTTP/1.1\r\nHost: payments, evil\r\n\r\n`, 400, "host"],
  ["request pipelined after conflicting Content-Lengths", `${POST}Content-Length: 4\r\nContent-Length: 5\r\n\r\n${SMUGGLED}`, 400, "content-length"],
  ["request pipelined after CL+TE", `${POST}Content-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n${SMUGGLED}`, 400, "transfer-encoding"],
  ["request hidden in a GET body", `${GET}Content-Length: ${SMUGGLED.length}\r\n\r\n${SMUGGLED}`, 400, "body-on-get"],
  ["GET with a chunked body", `${GET}Transfer-Encoding: chunked\r\n\r\n`, 400, "body-on-get"],
  ["HEAD with a body", `HEAD /g HTTP/1.1\r\n${H}Content-Length: 4\r\n\r\n`, 400, "body-on-get"],
  ["Upgrade: h2c", `${GET}Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n`, 400, "h2c"],
  ["Upgrade: h2c in a list, upper case", `${GET}Connection: Upgrade\r\nUpgrade: websocket, H2C\r\n\r\n`, 400, "h2c"],
  ["HTTP2-Settings without Upgrade", `${GET}HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n`, 400, "h2c"],
  // The version is checked before the target, so the preface gets the more telling answer.
  ["HTTP/2 preface", `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`, 505, "version"],
  ["CONNECT", `CONNECT payments:80 HTTP/1.1\r\nHost: payments:80\r\n\r\n`, 400, "target"],
  ["CONNECT to a userinfo-like target", `CONNECT x:@127.0.0.1:9/p HTTP/1.1\r\n${H}\r\n`, 400, "target"],
  ["target without a leading slash", `GET abc HTTP/1.1\r\n${H}\r\n`, 400, "target"],
  ["userinfo-like target", `GET x:@host/p HTTP/1.1\r\n${H}\r\n`, 400, "target"],
  ["asterisk-form on GET", `GET * HTTP/1.1\r\n${H}\r\n`, 400, "target"],
  ["ftp absolute-form", `GET ftp://payments/p HTTP/1.1\r\n${H}\r\n`, 400, "target"],
  ["absolute-form with userinfo", `GET http://evil@payments/p HTTP/1.1\r\n${H}\r\n`, 400, "target"],
  ["absolute-form with an empty authority", `GET http:///p HTTP/1.1\r\n${H}\r\n`, 400, "target"],
  ["absolute-form still needs a Host header", `GET http://payments/p HTTP/1.1\r\n\r\n`, 400, "host"],
  ["absolute-form with an invalid Host header", `GET http://payments/p HTTP/1.1\r\nHost: a b\r\n\r\n`, 400, "host"],
  ["fragment in the target", `GET /g#frag HTTP/1.1\r\n${H}\r\n`, 400, "target"],
  ["obs-text in the target", `GET /\xe9 HTTP/1.1\r\n${H}\r\n`, 400, "target"],
  ["DEL in the target", `GET /a\x7fb HTTP/1.1\r\n${H}\r\n`, 400, "target"],
  ["tab in the target", `GET /a\tb HTTP/1.1\r\n${H}\r\n`, 400, "target"],
  ["HTTP/1.2", `GET /g HTTP/1.2\r\n${H}\r\n`, 505, "version"],
  ["HTTP/2.0", `GET /g HTTP/2.0\r\n${H}\r\n`, 505, "version"],
  ["HTTP/0.9 request line (no version)", `GET /g\r\n\r\n`, 400, "request-line"],
  ["lower-case http version", `GET /g http/1.1\r\n${H}\r\n`, 400, "request-line"],
  ["two-digit minor version", `GET /g HTTP/1.10\r\n${H}\r\n`, 400, "request-line"],
  ["space inside the target", `GET /a b HTTP/1.1\r\n${H}\r\n`, 400, "request-line"],
  ["two spaces after the method", `GET  /g HTTP/1.1\r\n${H}\r\n`, 400, "request-line"],
  ["two spaces before the version", `GET /g  HTTP/1.1\r\n${H}\r\n`, 400, "request-line"],
  ["trailing space after the version", `GET /g HTTP/1.1 \r\n${H}\r\n`, 400, "request-line"],
  ["tab as separator", `GET\t/g HTTP/1.1\r\n${H}\r\n`, 400, "request-line"],
  ["leading space before the method", ` GET /g HTTP/1.1\r\n${H}\r\n`, 400, "request-line"],
  ["separator in the method", `GE(T /g HTTP/1.1\r\n${H}\r\n`, 400, "request-line"],
  ["Expect other than 100-continue", `${POST}Content-Length: 1\r\nExpect: 200-ok\r\n\r\n`, 417, "expect"],
  // limits.test.ts
  ["one 64 KiB header", `GET /h HTTP/1.1\r\n${H}X-Big: ${"a".repeat(64 * 1024)}\r\n\r\n`, 431, "too-large"],
  ["64 KiB over 64 headers of 1 KiB", `GET /h HTTP/1.1\r\n${H}${many(64, 1024)}\r\n`, 431, "too-large"],
  ["10,000 tiny headers", `GET /h HTTP/1.1\r\n${H}${many(10_000)}\r\n`, 431, "too-large"],
  ["250 tiny headers (over the count limit, under the size limit)", `GET /h HTTP/1.1\r\n${H}${many(250)}\r\n`, 431, "too-large"],
  ["a 1 MB URL", `GET /${"a".repeat(1 << 20)} HTTP/1.1\r\n${H}\r\n`, 431, "too-large"],
  ["a 1 MB query string", `GET /h?q=${"a".repeat(1 << 20)} HTTP/1.1\r\n${H}\r\n`, 431, "too-large"],
];

describe("refused heads", () => {
  for (const [name, bytes, status, reason] of REFUSED) {
    test(`${name} → ${status} ${reason}`, () => {
      expect(refusal(bytes)).toEqual([status, reason]);
    });
  }
});

describe("after a previous head on the same connection (whose strings are reused)", () => {
  const previous = parse(`GET /g HTTP/1.1\r\n${H}X-A: a\r\nAccept: */*\r\n\r\n`);
  for (const [name, bytes, status, reason] of REFUSED) {
    test(`${name} → ${status} ${reason}`, () => {
      expect(refusal(bytes, previous)).toEqual([status, reason]);
    });
  }

  test("a Host that differs from the previous one only in its bytes is checked again", () => {
    expect(refusal(`GET /g HTTP/1.1\r\nHost: pay@ents\r\n\r\n`, previous)).toEqual([400, "host"]);
    expect(refusal(`GET /g HTTP/1.1\r\nX-A: a\r\nHost: payments\r\n\r\n`, parse(`GET /g HTTP/1.1\r\nX-A: payments\r\nHost: a\r\n\r\n`))).toBe("accepted");
    // The previous head's other values are not trusted as hosts, even when equal.
    const withValue = parse(`GET /g HTTP/1.1\r\nHost: a\r\nX-A: pay@ents\r\n\r\n`);
    expect(refusal(`GET /g HTTP/1.1\r\nX-A: a\r\nHost: pay@ents\r\n\r\n`, withValue)).toEqual([400, "host"]);
  });

  /** The head, or [status, reason] of its refusal. */
  const outcome = (text: string, previous?: RequestHead): RequestHead | [number, string] => {
    try {
      return parse(text, previous);
    } catch (err) {
      if (!(err instanceof RequestHeadError)) throw err;
      return [err.status, err.reason];
    }
  };

  test("5,000 heads drawn from a few values: each parses as it would alone", () => {
    const random = seeded(6);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)]!;
    const targets = ["/", "/g", "/h", "/g?x=1", "http://payments/g", "http://pay@ments/g", "*"];
    const hosts = ["payments", "paymentz", "pay@ents", "orders:80", ""];
    const lines = ["X-A: a", "X-A: b", "X-A: ab", "x-a: a", "Accept: */*", "Accept: */+", "Content-Length: 4", "Content-Length: 5", "Connection: close", "Connection: keep-alive", "X-B: \xe9", "User-Agent: wrk"];
    let previous: RequestHead | undefined;
    for (let i = 0; i < 5_000; i++) {
      const fields = Array.from({ length: Math.floor(random() * 4) }, () => pick(lines));
      fields.splice(Math.floor(random() * (fields.length + 1)), 0, `Host: ${pick(hosts)}`);
      const text = `${pick(["GET", "POST", "OPTIONS"])} ${pick(targets)} HTTP/1.${pick([0, 1])}\r\n${fields.map((f) => `${f}\r\n`).join("")}\r\n`;
      const alone = outcome(text);
      expect(outcome(text, previous)).toEqual(alone);
      if (!Array.isArray(alone)) previous = alone;
    }
  });
});

describe("line endings, through the indexOf scanner used past 512 new bytes", () => {
  const pad = `X-Pad: ${"p".repeat(600)}\r\n`;
  for (const [name, bytes, status, reason] of REFUSED.filter((c) => c[3] === "line-ending")) {
    test(`${name}, padded → ${status} ${reason}`, () => {
      const padded = bytes.endsWith("\r\n\r\n") ? `${bytes.slice(0, -2)}${pad}\r\n` : bytes + pad;
      expect(padded.length).toBeGreaterThan(600);
      expect(refusal(padded)).toEqual([status, reason]);
    });
  }
});

describe("accepted heads", () => {
  test("a Host port up to 65535 is accepted, leading zeros as RFC 3986 allows", () => {
    for (const host of ["payments:1", "payments:80", "payments:8080", "payments:59999", "payments:65535", "payments:0080", "[::1]:65535"])
      expect(refusal(`GET /g HTTP/1.1\r\nHost: ${host}\r\n\r\n`)).toBe("accepted");
  });

  test("a typical GET: fields in order, names lower-cased, values trimmed", () => {
    const text = "GET /path?q=1 HTTP/1.1\r\nHost: payments\r\nUser-Agent:  x \r\nAccept:\t*/*\t\r\nX-Empty:\r\n\r\n";
    expect(parse(text)).toEqual({
      start: 0,
      end: text.length,
      method: "GET",
      target: "/path?q=1",
      pathAndQuery: "/path?q=1",
      minor: 1,
      fields: ["host", "payments", "user-agent", "x", "accept", "*/*", "x-empty", ""],
      host: "payments",
      contentLength: -1,
      chunked: false,
      keepAlive: true,
      connectionTokens: [],
      websocket: false,
      expectContinue: false,
      obsText: false,
    });
  });

  test("methods are kept as sent (case-sensitive), any tchar", () => {
    expect(parse(`get /g HTTP/1.1\r\n${H}\r\n`).method).toBe("get");
    expect(parse(`M-SEARCH /g HTTP/1.1\r\n${H}\r\n`).method).toBe("M-SEARCH");
  });

  test("POST with a Content-Length, and leading zeros", () => {
    expect(parse(`${POST}Content-Length: 5\r\n\r\n`)).toMatchObject({ method: "POST", contentLength: 5, chunked: false });
    expect(parse(`${POST}Content-Length: 007\r\n\r\n`).contentLength).toBe(7);
    expect(parse(`${POST}Content-Length: 999999999999999\r\n\r\n`).contentLength).toBe(999999999999999);
  });

  test("chunked: OWS and letter case tolerated", () => {
    for (const te of ["chunked", "chunked ", "\tchunked", "CHUNKED"]) {
      expect(parse(`${POST}Transfer-Encoding: ${te}\r\n\r\n`)).toMatchObject({ chunked: true, contentLength: -1 });
    }
  });

  test("Content-Length: 0 on GET and HEAD is fine", () => {
    expect(parse(`${GET}Content-Length: 0\r\n\r\n`).contentLength).toBe(0);
    expect(parse(`HEAD /g HTTP/1.1\r\n${H}Content-Length: 0\r\n\r\n`).contentLength).toBe(0);
  });

  test("Host forms: port, IPv4, IPv6 literal; header name in any case", () => {
    expect(parse(`GET / HTTP/1.1\r\nHOST: payments:8080\r\n\r\n`).host).toBe("payments:8080");
    expect(parse(`GET / HTTP/1.1\r\nhost: 10.0.0.1\r\n\r\n`).host).toBe("10.0.0.1");
    expect(parse(`GET / HTTP/1.1\r\nHost: [::1]:9\r\n\r\n`).host).toBe("[::1]:9");
  });

  test("absolute-form: the target's authority wins, the path goes upstream", () => {
    const h = parse(`GET HTTP://orders:1/p?q HTTP/1.1\r\nHost: other\r\n\r\n`);
    expect(h).toMatchObject({ target: "HTTP://orders:1/p?q", pathAndQuery: "/p?q", host: "orders:1" });
    expect(parse(`GET https://orders HTTP/1.1\r\n${H}\r\n`)).toMatchObject({ pathAndQuery: "/", host: "orders" });
    expect(parse(`GET http://orders?x=1 HTTP/1.1\r\n${H}\r\n`)).toMatchObject({ pathAndQuery: "/?x=1", host: "orders" });
    expect(parse(`GET http://[::1]:80/a HTTP/1.1\r\n${H}\r\n`)).toMatchObject({ pathAndQuery: "/a", host: "[::1]:80" });
  });

  test("asterisk-form on OPTIONS; OPTIONS for a whole server in absolute-form becomes *", () => {
    expect(parse(`OPTIONS * HTTP/1.1\r\n${H}\r\n`)).toMatchObject({ target: "*", pathAndQuery: "*" });
    expect(parse(`OPTIONS http://orders:8001 HTTP/1.1\r\n${H}\r\n`)).toMatchObject({ pathAndQuery: "*", host: "orders:8001" });
    expect(parse(`OPTIONS http://orders:8001/ HTTP/1.1\r\n${H}\r\n`).pathAndQuery).toBe("/");
  });

  test("obs-text in a header value is kept as latin1, and noted", () => {
    expect(fieldValue(parse(`${GET}X-A: caf\xe9\r\n\r\n`).fields, "x-a")).toBe("caf\xe9");
    expect(parse(`${GET}X-A: caf\xe9\r\n\r\n`).obsText).toBe(true);
    expect(parse(`${GET}X-A: cafe ~\t!\r\n\r\n`).obsText).toBe(false);
  });

  test("keep-alive: 1.1 unless close; 1.0 only with keep-alive; tokens accumulate, lower-cased, empty dropped", () => {
    expect(parse(`${GET}\r\n`).keepAlive).toBe(true);
    expect(parse(`${GET}Connection: Close\r\n\r\n`).keepAlive).toBe(false);
    expect(parse(`GET /g HTTP/1.0\r\n${H}\r\n`)).toMatchObject({ minor: 0, keepAlive: false });
    expect(parse(`GET /g HTTP/1.0\r\n${H}Connection: Keep-Alive\r\n\r\n`).keepAlive).toBe(true);
    expect(parse(`GET /g HTTP/1.0\r\n${H}Connection: keep-alive, close\r\n\r\n`).keepAlive).toBe(false);
    const h = parse(`${GET}Connection: keep-alive, , X-Foo\r\nX-Foo: 1\r\nConnection: TE\r\n\r\n`);
    expect(h.connectionTokens).toEqual(["keep-alive", "x-foo", "te"]);
    expect(h.fields).toContain("x-foo");
  });

  test("websocket: GET on 1.1 with Upgrade websocket and Connection upgrade", () => {
    const ws = `Connection: keep-alive, Upgrade\r\nUpgrade: WebSocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`;
    expect(parse(`${GET}${ws}`).websocket).toBe(true);
    expect(parse(`POST /g HTTP/1.1\r\n${H}${ws}`).websocket).toBe(false);
    expect(parse(`GET /g HTTP/1.0\r\n${H}${ws}`).websocket).toBe(false);
    expect(parse(`${GET}Upgrade: websocket\r\n\r\n`).websocket).toBe(false);
    expect(parse(`${GET}Connection: upgrade\r\nUpgrade: foo\r\n\r\n`).websocket).toBe(false);
  });

  test("Expect: 100-continue, any case; ignored on HTTP/1.0", () => {
    expect(parse(`${POST}Content-Length: 1\r\nExpect: 100-Continue\r\n\r\n`).expectContinue).toBe(true);
    expect(parse(`POST /p HTTP/1.0\r\n${H}Content-Length: 1\r\nExpect: 100-continue\r\n\r\n`).expectContinue).toBe(false);
  });

  test("hop-by-hop and identity headers are reported, not dropped (the caller filters)", () => {
    const h = parse(`${GET}Keep-Alive: timeout=5\r\nX-Mesh-Client-Id: spoofed\r\nTE: trailers\r\n\r\n`);
    expect(h.fields).toEqual(["host", "payments", "keep-alive", "timeout=5", "x-mesh-client-id", "spoofed", "te", "trailers"]);
  });

  test("fieldValue: the first field of that name, or undefined", () => {
    const f = parse(`${GET}X-A: 1\r\nX-A: 2\r\n\r\n`).fields;
    expect(fieldValue(f, "x-a")).toBe("1");
    expect(fieldValue(f, "host")).toBe("payments");
    expect(fieldValue(f, "x-b")).toBeUndefined();
  });

  test("under the limits: a 12 KiB header, and exactly MAX_REQUEST_HEADERS fields", () => {
    const big = "b".repeat(12 * 1024);
    expect(fieldValue(parse(`GET /ok HTTP/1.1\r\n${H}X-Big: ${big}\r\n\r\n`).fields, "x-big")).toBe(big);
    expect(parse(`GET /ok HTTP/1.1\r\n${H}${many(MAX_REQUEST_HEADERS - 1)}\r\n`).fields.length).toBe(2 * MAX_REQUEST_HEADERS);
    expect(refusal(`GET /ok HTTP/1.1\r\n${H}${many(MAX_REQUEST_HEADERS)}\r\n`)).toEqual([431, "too-large"]);
  });

  test("a head of exactly MAX_REQUEST_HEAD_BYTES is accepted; one byte more is 431", () => {
    const fill = (n: number) => `GET /${"a".repeat(n)} HTTP/1.1\r\n${H}\r\n`;
    const base = fill(0).length;
    expect(parse(fill(MAX_REQUEST_HEAD_BYTES - base)).target.length).toBe(MAX_REQUEST_HEAD_BYTES - base + 1);
    expect(refusal(fill(MAX_REQUEST_HEAD_BYTES - base + 1))).toEqual([431, "too-large"]);
  });
});

describe("findRequestHeadEnd", () => {
  const feed = (text: string, step: number, from = 0) => {
    const all = Buffer.from(text, "latin1");
    for (let n = from + step, scanned = from; ; n += step) {
      const buf = all.subarray(0, Math.min(n, all.length));
      const end = findRequestHeadEnd(buf, from, scanned);
      if (end >= 0 || buf.length === all.length) return { buf, end };
      scanned = buf.length;
    }
  };

  test("incomplete → -1; found whatever the split, including CRLF CRLF split across reads", () => {
    const text = `${GET}X-A: 1\r\n\r\nBODY`;
    for (const step of [1, 2, 3, 5, 7]) expect(feed(text, step).end).toBe(text.length - 4);
    const long = `${GET}X-A: ${"a".repeat(2000)}\r\nX-B: ${"b".repeat(2000)}\r\n\r\nBODY`;
    for (const step of [1, 600, 1000, 2029, 4096]) expect(feed(long, step).end).toBe(long.length - 4);
    expect(findRequestHeadEnd(Buffer.from(`${GET}X-A: 1\r\n`), 0, 0)).toBe(-1);
    expect(findRequestHeadEnd(Buffer.from("GET / HTTP/1.1\r"), 0, 0)).toBe(-1);
  });

  test("leading empty lines are skipped, and parseRequestHead reports where the request line starts", () => {
    const text = `\r\n\r\n${GET}\r\n`;
    for (const step of [1, 2, 3]) expect(feed(text, step).end).toBe(text.length);
    expect(findRequestHeadEnd(Buffer.from("\r\n\r\n"), 0, 0)).toBe(-1);
    const h = parse(text);
    expect(h).toMatchObject({ start: 4, method: "GET", target: "/g", host: "payments" });
  });

  test("a pipelined second head at an offset", () => {
    const first = `${GET}\r\n`;
    const text = `${first}POST /p HTTP/1.1\r\n${H}Content-Length: 0\r\n\r\n`;
    const buf = Buffer.from(text, "latin1");
    const end1 = findRequestHeadEnd(buf, 0, 0);
    expect(end1).toBe(first.length);
    const end2 = findRequestHeadEnd(buf, end1, end1);
    expect(end2).toBe(text.length);
    expect(parseRequestHead(buf, end1, end2)).toMatchObject({ start: end1, end: end2, method: "POST", target: "/p", contentLength: 0 });
  });

  test("a head ended by bare LFs fails as soon as they arrive, not at the size limit", () => {
    expect(() => findRequestHeadEnd(Buffer.from("GET /g HTTP/1.1\n"), 0, 0)).toThrow(RequestHeadError);
    expect(() => feed(`GET /g HTTP/1.1\r\nHost: a\n\n`, 1)).toThrow("bare LF");
    expect(() => feed(`GET /g HTTP/1.1\r\nHost: a\rX`, 1)).toThrow("bare CR");
    // A head that starts right after a CR of the previous message: its first LF is still bare.
    for (const pad of ["", "a".repeat(1000)]) {
      const afterCr = Buffer.from(`\r\nGET /g HTTP/1.1\r\nHost: a\r\nX-P: ${pad}\r\n\r\n`, "latin1");
      expect(() => findRequestHeadEnd(afterCr, 1, 1)).toThrow("bare LF");
    }
    const big = `GET /g HTTP/1.1\r\nX-A: ${"a".repeat(1000)}\r`;
    expect(() => feed(`${big}X`, big.length)).toThrow("bare CR"); // the CR ended the previous read
    expect(() => feed(`${big}\r\n${"b".repeat(1000)}`, big.length)).toThrow("bare CR");
  });

  test("an incomplete head over the limit is refused without waiting for its end", () => {
    const over = Buffer.from(`GET /${"a".repeat(MAX_REQUEST_HEAD_BYTES)}`, "latin1");
    expect(() => findRequestHeadEnd(over, 0, 0)).toThrow(expect.objectContaining({ status: 431, reason: "too-large" }));
    expect(findRequestHeadEnd(over.subarray(0, MAX_REQUEST_HEAD_BYTES), 0, 0)).toBe(-1);
  });

  test("the limit also caps leading empty lines", () => {
    const crlfs = Buffer.from("\r\n".repeat(MAX_REQUEST_HEAD_BYTES), "latin1");
    expect(() => findRequestHeadEnd(Buffer.concat([crlfs, Buffer.from("GET")]), 0, 0)).toThrow(expect.objectContaining({ status: 431 }));
  });
});
