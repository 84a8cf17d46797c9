/**
 * The HTTP/1 client's parsers and request builder, without sockets: every framing rule
 * of threats.md "HTTP/1 framing" that applies to a response, and what the client writes.
 */
import { describe, expect, test } from "bun:test";
import { ChunkedDecoder } from "../../../src/proxy/transport/h1/chunked.ts";
import { ProtocolError } from "../../../src/proxy/transport/h1/errors.ts";
import { chunkFrame } from "../../../src/proxy/transport/h1/request-body.ts";
import { prepareRequest } from "../../../src/proxy/transport/h1/request-head.ts";
import { framingOf } from "../../../src/proxy/transport/h1/response-framing.ts";
import { findHeadEnd, MAX_HEAD_BYTES, parseContentLength, parseResponseHead } from "../../../src/proxy/transport/h1/response-head.ts";

function parse(text: string) {
  const buf = Buffer.from(text, "latin1");
  const end = findHeadEnd(buf, 0, 0);
  if (end < 0) throw new Error("incomplete head");
  return parseResponseHead(buf, 0, end);
}

function decode(text: string | string[]): { body: string; used: number; done: boolean } {
  const d = new ChunkedDecoder();
  let body = "";
  let used = 0;
  for (const piece of Array.isArray(text) ? text : [text]) {
    used = d.push(Buffer.from(piece, "latin1"), (c) => (body += Buffer.from(c).toString("latin1")));
  }
  return { body, used, done: d.done };
}

describe("response head", () => {
  test("a normal head: status, reason, headers in order, framing", () => {
    const h = parse("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n");
    expect(h).toMatchObject({ status: 200, statusText: "OK", minor: 1, contentLength: 5, chunked: false, keepAlive: true });
    expect(h.headers).toEqual([
      ["Content-Type", "text/plain"],
      ["Content-Length", "5"],
      ["Set-Cookie", "a=1"],
      ["Set-Cookie", "b=2"],
    ]);
  });

  test("values are trimmed of OWS; obs-text is kept byte for byte; an empty reason and a missing one are fine", () => {
    expect(parse("HTTP/1.1 200 \r\nx:  \t v a l \t \r\n\r\n").headers).toEqual([["x", "v a l"]]);
    expect(parse("HTTP/1.1 204\r\nx: caf\xe9\r\n\r\n")).toMatchObject({ status: 204, statusText: "", headers: [["x", "caf\xe9"]] });
    expect(parse("HTTP/1.1 200 \r\nx:\r\n\r\n").headers).toEqual([["x", ""]]);
  });

  test("keep-alive: HTTP/1.1 unless close; HTTP/1.0 only with keep-alive", () => {
    expect(parse("HTTP/1.1 200 OK\r\nConnection: Close\r\n\r\n").keepAlive).toBe(false);
    expect(parse("HTTP/1.1 200 OK\r\nconnection: x, close\r\n\r\n").keepAlive).toBe(false);
    expect(parse("HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n").keepAlive).toBe(false);
    expect(parse("HTTP/1.0 200 OK\r\nconnection: keep-alive\r\n\r\n")).toMatchObject({ keepAlive: true, minor: 0 });
  });

  test("Transfer-Encoding: a lone chunked, any case and OWS, is chunked", () => {
    expect(parse("HTTP/1.1 200 OK\r\nTransfer-Encoding:  Chunked \r\n\r\n").chunked).toBe(true);
  });

  test("identical repeated Content-Lengths are one (RFC 9110 §8.6)", () => {
    expect(parse("HTTP/1.1 200 OK\r\ncontent-length: 5\r\nContent-Length: 5\r\n\r\n").contentLength).toBe(5);
    expect(parse("HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\n\r\n").contentLength).toBe(5);
  });

  test("a Content-Length of up to 15 digits is read from its bytes; 16 is refused", () => {
    expect(parse("HTTP/1.1 200 OK\r\ncontent-length: 999999999999999\r\n\r\n").contentLength).toBe(999999999999999);
    expect(parse("HTTP/1.1 200 OK\r\ncontent-length: 007\r\n\r\n").contentLength).toBe(7);
    expect(() => parse("HTTP/1.1 200 OK\r\ncontent-length: 1000000000000000\r\n\r\n")).toThrow("invalid content-length");
  });

  const refused: [string, string][] = [
    ["both framings", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"],
    ["both framings, TE first", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"],
    ["two different content-lengths", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"],
    ["a list of different content-lengths", "HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n"],
    ["empty content-length", "HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n"],
    ["signed content-length", "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n"],
    ["negative content-length", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"],
    ["hex content-length", "HTTP/1.1 200 OK\r\nContent-Length: 0x5\r\n\r\n"],
    ["fractional content-length", "HTTP/1.1 200 OK\r\nContent-Length: 5.0\r\n\r\n"],
    ["spaced content-length", "HTTP/1.1 200 OK\r\nContent-Length: 5 5\r\n\r\n"],
    ["overflowing content-length", "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n"],
    ["gzip, chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"],
    ["chunked twice", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"],
    ["chunked, chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"],
    ["xchunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: xchunked\r\n\r\n"],
    ["chunked with a parameter", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked;q=1\r\n\r\n"],
    ["identity", "HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\n"],
    ["transfer-encoding on HTTP/1.0", "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"],
    ["obs-fold", "HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\n\r\n"],
    ["obs-fold with a tab", "HTTP/1.1 200 OK\r\nX-A: 1\r\n\tfolded\r\n\r\n"],
    ["bare CR in a value", "HTTP/1.1 200 OK\r\nX-A: 1\r2\r\n\r\n"],
    ["bare CR ending a line", "HTTP/1.1 200 OK\r\nX-A: 1\r\rX-B: 2\r\n\r\n"],
    ["NUL in a value", "HTTP/1.1 200 OK\r\nX-A: a\0b\r\n\r\n"],
    ["a control character in a value", "HTTP/1.1 200 OK\r\nX-A: a\x01b\r\n\r\n"],
    ["DEL in a value", "HTTP/1.1 200 OK\r\nX-A: a\x7fb\r\n\r\n"],
    ["whitespace before the colon", "HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\n"],
    ["a space in a name", "HTTP/1.1 200 OK\r\nX A: 1\r\n\r\n"],
    ["an empty name", "HTTP/1.1 200 OK\r\n: 1\r\n\r\n"],
    ["a line without a colon", "HTTP/1.1 200 OK\r\nnocolon\r\n\r\n"],
    ["HTTP/2.0", "HTTP/2.0 200 OK\r\n\r\n"],
    ["HTTP/1.2", "HTTP/1.2 200 OK\r\n\r\n"],
    ["lowercase http", "http/1.1 200 OK\r\n\r\n"],
    ["two-digit status", "HTTP/1.1 20 OK\r\n\r\n"],
    ["four-digit status", "HTTP/1.1 2000 OK\r\n\r\n"],
    ["non-digit status", "HTTP/1.1 2x0 OK\r\n\r\n"],
    ["not HTTP", "ICY 200 OK\r\n\r\n"],
    ["a control character in the reason", "HTTP/1.1 200 O\x01K\r\n\r\n"],
    ["an empty status line", "\r\n\r\n"],
  ];
  for (const [name, text] of refused) {
    test(`refused: ${name}`, () => {
      expect(() => parse(text)).toThrow(ProtocolError);
    });
  }

  test("bare LF is refused as soon as it is seen, complete head or not", () => {
    expect(() => findHeadEnd(Buffer.from("HTTP/1.1 200 OK\nX: 1\r\n\r\n"), 0, 0)).toThrow(ProtocolError);
    expect(() => findHeadEnd(Buffer.from("HTTP/1.1 200 OK\n\n"), 0, 0)).toThrow(ProtocolError);
    expect(() => findHeadEnd(Buffer.from("HTTP/1.1 200 OK\r\nX: 1\n"), 0, 0)).toThrow(ProtocolError);
  });

  test("a head that grows past 64 KiB is refused, complete or not", () => {
    const big = `HTTP/1.1 200 OK\r\nX: ${"a".repeat(MAX_HEAD_BYTES)}\r\n`;
    expect(() => findHeadEnd(Buffer.from(big), 0, 0)).toThrow(/larger than/);
    expect(() => findHeadEnd(Buffer.from(big + "\r\n"), 0, 0)).toThrow(/larger than/);
    const fits = `HTTP/1.1 200 OK\r\nX: ${"a".repeat(MAX_HEAD_BYTES - 100)}\r\n\r\n`;
    expect(findHeadEnd(Buffer.from(fits), 0, 0)).toBe(fits.length);
  });

  test("the head end is found across reads, from any starting offset", () => {
    const buf = Buffer.from("xxHTTP/1.1 200 OK\r\n\r\nbody");
    expect(findHeadEnd(buf, 2, 2)).toBe(21);
    expect(findHeadEnd(buf.subarray(0, 20), 2, 2)).toBe(-1);
  });

  test("heads past the first KiB: the same end, from every split point, and a bare LF anywhere is refused", () => {
    const head = `HTTP/1.1 200 OK\r\n${Array.from({ length: 40 }, (_, i) => `x-field-${i}: ${"v".repeat(40)}\r\n`).join("")}\r\n`;
    const buf = Buffer.from(head + "body");
    expect(head.length).toBeGreaterThan(2048);
    for (let cut = 0; cut <= buf.length; cut += 7) {
      const first = findHeadEnd(buf.subarray(0, cut), 0, 0);
      expect(first === -1 || first === head.length).toBe(true);
      // The next read: what was scanned is not scanned again.
      if (first === -1) expect(findHeadEnd(buf, 0, cut)).toBe(head.length);
    }
    for (const at of [10, 1030, 2000]) {
      const bad = Buffer.from(head);
      const lf = bad.indexOf("\r\n", at);
      bad[lf] = 0x20; // "…value \n": a bare LF
      expect(() => findHeadEnd(bad, 0, 0)).toThrow("bare LF");
    }
  });

  test("parseContentLength", () => {
    expect(parseContentLength("0")).toBe(0);
    expect(parseContentLength("123456789012345")).toBe(123456789012345);
    expect(() => parseContentLength("1234567890123456")).toThrow(ProtocolError);
  });
});

describe("chunked decoding", () => {
  test("chunks, extensions, trailers; bytes after the end are not consumed", () => {
    const text = "5\r\nhello\r\n6;ext=1;q=\"x\"\r\n world\r\n0\r\nX-T: 1\r\n\r\nEXTRA";
    expect(decode(text)).toEqual({ body: "hello world", used: text.indexOf("EXTRA"), done: true });
  });

  test("any split of the input decodes the same", () => {
    const text = "a\r\n0123456789\r\n1F\r\n" + "x".repeat(31) + "\r\n0\r\ntrailer: v\r\n\r\n";
    const whole = decode(text);
    expect(whole).toMatchObject({ body: "0123456789" + "x".repeat(31), done: true, used: text.length });
    for (let cut = 1; cut < text.length; cut++) {
      // `used` counts within the last piece.
      expect(decode([text.slice(0, cut), text.slice(cut)])).toEqual({ ...whole, used: text.length - cut });
    }
    expect(decode(text.split(""))).toEqual({ ...whole, used: 1 });
  });

  test("upper- and lower-case hex, leading zeros", () => {
    expect(decode("0A\r\n0123456789\r\n000\r\n\r\n").body).toBe("0123456789");
    expect(decode("a\r\n0123456789\r\n0\r\n\r\n").done).toBe(true);
  });

  test("not done until the final CRLF", () => {
    expect(decode("5\r\nhello\r\n").done).toBe(false);
    expect(decode("5\r\nhello\r\n0\r\n").done).toBe(false);
    expect(decode("5\r\nhello\r\n0\r\n\r").done).toBe(false);
  });

  const bad: [string, string][] = [
    ["a non-hex size", "zz\r\n"],
    ["a negative size", "-1\r\n"],
    ["0x prefix", "0x5\r\nhello\r\n"],
    ["an empty size", "\r\n"],
    ["whitespace after the size", "5 \r\nhello\r\n"],
    ["whitespace before the size", " 5\r\nhello\r\n"],
    ["an overlong size", "10000000000000\r\n"],
    ["bare LF after the size", "5\nhello\r\n"],
    ["bare CR after the size", "5\rhello\r\n"],
    ["data not followed by CRLF", "5\r\nhelloX\r\n"],
    ["data followed by bare LF", "5\r\nhello\n0\r\n\r\n"],
    ["a control byte in an extension", "5;a\x01\r\nhello\r\n"],
    ["a bad trailer name", "0\r\nbad name: 1\r\n\r\n"],
    ["obs-fold in trailers", "0\r\nX: 1\r\n folded\r\n\r\n"],
    ["bare LF in trailers", "0\r\nX: 1\n\r\n"],
    ["bare LF ending the message", "0\r\n\n"],
    ["a size line over 4 KiB", `5;${"e".repeat(5000)}\r\n`],
    ["trailers over 64 KiB", `0\r\nX: ${"v".repeat(70000)}\r\n\r\n`],
  ];
  for (const [name, text] of bad) {
    test(`refused: ${name}`, () => {
      expect(() => decode(text)).toThrow(ProtocolError);
    });
  }

  test("chunkFrame writes size, CRLF, data, CRLF in one buffer", () => {
    expect(Buffer.from(chunkFrame(Buffer.from("x".repeat(26)))).toString()).toBe(`1a\r\n${"x".repeat(26)}\r\n`);
  });
});

describe("body framing (RFC 9112 §6.3)", () => {
  const head = (text: string) => parse(text);
  const feed = (f: ReturnType<typeof framingOf>, text: string) => {
    let out = "";
    // Behind a prefix the framing must not read: pieces are ranges of the buffer it was given.
    const buf = Buffer.from(`PREFIX${text}`, "latin1");
    const complete = f.feed(buf, 6, buf.length, {
      piece: (b, s, e) => (out += Buffer.from(b).toString("latin1", s, e)),
      emit: (d) => (out += Buffer.from(d).toString("latin1")),
    });
    return { out, complete, extra: f.extra };
  };

  test("HEAD, 204 and 304 have no body whatever the headers say; bytes after them are extra", () => {
    const cl = head("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n");
    expect(framingOf(cl, true)).toMatchObject({ kind: "none", done: true });
    expect(framingOf(head("HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\n"), false).kind).toBe("none");
    expect(framingOf(head("HTTP/1.1 304 Not Modified\r\ntransfer-encoding: chunked\r\n\r\n"), false).kind).toBe("none");
    expect(feed(framingOf(cl, true), "hello")).toEqual({ out: "", complete: true, extra: true });
  });

  test("content-length: exactly that many bytes; the rest is extra", () => {
    const f = framingOf(head("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"), false);
    expect(feed(f, "hel")).toEqual({ out: "hel", complete: false, extra: false });
    expect(feed(f, "loHTTP")).toEqual({ out: "lo", complete: true, extra: true });
    expect(framingOf(head("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"), false).kind).toBe("none");
  });

  test("no framing: until the close, and only a clean close completes it", () => {
    const f = framingOf(head("HTTP/1.0 200 OK\r\n\r\n"), false);
    expect(f.kind).toBe("close");
    expect(feed(f, "anything")).toEqual({ out: "anything", complete: false, extra: false });
    expect(f.closed()).toBe(true);
    const cl = framingOf(head("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"), false);
    expect(cl.closed()).toBe(false);
  });

  test("chunked", () => {
    const f = framingOf(head("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"), false);
    expect(feed(f, "2\r\nhi\r\n0\r\n\r\nX")).toEqual({ out: "hi", complete: true, extra: true });
  });
});

describe("request head", () => {
  const h = (init: Record<string, string> = {}) => new Headers(init);

  test("request line, Host first (default host:port), caller headers, no framing for a bodiless GET", () => {
    const p = prepareRequest("GET", "/a?b=1", h({ accept: "*/*" }), false, "10.0.0.1:8080");
    expect(p.head).toBe("GET /a?b=1 HTTP/1.1\r\nhost: 10.0.0.1:8080\r\naccept: */*\r\n\r\n");
    expect(p).toMatchObject({ framing: { kind: "none" }, isHead: false, replayable: true });
  });

  test("the caller's Host is kept", () => {
    expect(prepareRequest("GET", "/", h({ host: "payments" }), false, "x:1").head).toBe("GET / HTTP/1.1\r\nhost: payments\r\n\r\n");
  });

  test("a body of unknown length goes chunked; a given content-length passes through", () => {
    expect(prepareRequest("POST", "/", h(), true, "x:1")).toMatchObject({ framing: { kind: "chunked" }, head: "POST / HTTP/1.1\r\nhost: x:1\r\ntransfer-encoding: chunked\r\n\r\n", replayable: false });
    expect(prepareRequest("PUT", "/", h({ "content-length": "12" }), true, "x:1")).toMatchObject({ framing: { kind: "length", length: 12 }, head: "PUT / HTTP/1.1\r\nhost: x:1\r\ncontent-length: 12\r\n\r\n" });
  });

  test("an empty POST announces content-length: 0", () => {
    expect(prepareRequest("POST", "/", h(), false, "x:1").head).toBe("POST / HTTP/1.1\r\nhost: x:1\r\ncontent-length: 0\r\n\r\n");
  });

  test("connection-level headers from the caller are not sent", () => {
    const p = prepareRequest(
      "POST",
      "/",
      h({ connection: "close", "keep-alive": "timeout=5", "transfer-encoding": "chunked", te: "trailers", upgrade: "h2c", "proxy-connection": "x", "x-ok": "1" }),
      true,
      "x:1",
    );
    expect(p.head).toBe("POST / HTTP/1.1\r\nhost: x:1\r\nx-ok: 1\r\ntransfer-encoding: chunked\r\n\r\n");
  });

  test("obs-text goes out as latin1 bytes, not UTF-8", () => {
    const p = prepareRequest("GET", "/", h({ "x-name": "caf\u00e9" }), false, "x:1");
    expect(p.head).toBeInstanceOf(Uint8Array);
    expect(Buffer.from(p.head as Uint8Array).toString("latin1")).toContain("x-name: caf\xe9\r\n");
  });

  test("replayable: bodiless and idempotent, or with an Idempotency-Key", () => {
    expect(prepareRequest("DELETE", "/", h(), false, "x:1").replayable).toBe(true);
    expect(prepareRequest("POST", "/", h(), false, "x:1").replayable).toBe(false);
    expect(prepareRequest("POST", "/", h({ "idempotency-key": "k1" }), false, "x:1").replayable).toBe(true);
    expect(prepareRequest("PUT", "/", h(), true, "x:1").replayable).toBe(false);
  });

  const invalid: [string, () => unknown][] = [
    ["a method with a space", () => prepareRequest("GE T", "/", h(), false, "x:1")],
    ["an empty method", () => prepareRequest("", "/", h(), false, "x:1")],
    ["CONNECT", () => prepareRequest("CONNECT", "/", h(), false, "x:1")],
    ["a target with a space", () => prepareRequest("GET", "/a b", h(), false, "x:1")],
    ["a target with CRLF", () => prepareRequest("GET", "/a\r\nX: 1", h(), false, "x:1")],
    ["a target not starting with /", () => prepareRequest("GET", "a", h(), false, "x:1")],
    ["a non-ASCII target", () => prepareRequest("GET", "/caf\u00e9", h(), false, "x:1")],
    ["content-length without a body", () => prepareRequest("POST", "/", h({ "content-length": "5" }), false, "x:1")],
    ["a non-decimal content-length", () => prepareRequest("POST", "/", h({ "content-length": "0x5" }), true, "x:1")],
    ["a control character in a header value", () => prepareRequest("GET", "/", h({ "x-a": "a\x01b" }), false, "x:1")],
  ];
  for (const [name, call] of invalid) {
    test(`refused before sending: ${name}`, () => {
      expect(call).toThrow(TypeError);
    });
  }
});
