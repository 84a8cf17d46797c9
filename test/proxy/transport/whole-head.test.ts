/**
 * parseWholeHead (one pass over a response head that came in one read) against the two
 * passes it replaces there, findHeadEnd then parseResponseHead: over every prefix of
 * valid and malformed heads, the same head when complete, nothing when cut short, and a
 * ProtocolError wherever the two passes refuse.
 */
import { expect, test } from "bun:test";
import { ProtocolError } from "../../../src/proxy/transport/h1/errors.ts";
import { findHeadEnd, parseResponseHead, parseWholeHead, type ResponseHead } from "../../../src/proxy/transport/h1/response-head.ts";
import { seeded } from "../../helpers/prng.ts";

type Outcome = { head: ReturnType<typeof shape> } | "incomplete" | "refused";

function shape(h: ResponseHead) {
  const { start, fieldsStart, fieldsEnd, at, connectionTokens } = h.raw;
  return { status: h.status, minor: h.minor, contentLength: h.contentLength, chunked: h.chunked, keepAlive: h.keepAlive, start, fieldsStart, fieldsEnd, at, connectionTokens };
}

function outcome(parse: () => ResponseHead | undefined): Outcome {
  try {
    const head = parse();
    return head === undefined ? "incomplete" : { head: shape(head) };
  } catch (err) {
    if (!(err instanceof ProtocolError)) throw err;
    return "refused";
  }
}

function twoPasses(buf: Buffer): Outcome {
  return outcome(() => {
    const end = findHeadEnd(buf, 0, 0);
    return end < 0 ? undefined : parseResponseHead(buf, 0, end);
  });
}

test("every prefix of 2,000 heads, valid and not: one pass agrees with two", () => {
  const random = seeded(9);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)]!;
  const statusLines = ["HTTP/1.1 200 OK", "HTTP/1.0 204 No Content", "HTTP/1.1 100 Continue", "HTTP/1.1 404 ", "HTTP/1.1 200", "HTTP/2 200 OK", "HTTP/1.1 2x0 OK", "HTTP/1.1 200 O\x01K"];
  const lines = ["Content-Length: 5", "Content-Length: 05", "content-length: 5, 5", "Content-Length: 6", "Transfer-Encoding: chunked", "Connection: close",
    "Connection: keep-alive, X-A", "X-A:  spaced  ", "X-B: caf\xe9", "Date: Sun, 06 Dec 2026 04:01:30 GMT", " folded", "Bad Name: x", "X-C: a\x00b", "X-D:"];
  const endings = ["\r\n", "\r\n", "\r\n", "\n", "\r"];
  let complete = 0;
  for (let i = 0; i < 2_000; i++) {
    let text = pick(statusLines) + pick(endings);
    const n = Math.floor(random() * 4);
    for (let j = 0; j < n; j++) text += pick(lines) + pick(endings);
    text += pick(["\r\n", "\r\n", "\n", ""]) + pick(["", "hello", "\r\n\r\n"]);
    const bytes = Buffer.from(text, "latin1");
    for (let len = 1; len <= bytes.length; len++) {
      const buf = bytes.subarray(0, len);
      const two = twoPasses(buf);
      const one = outcome(() => parseWholeHead(buf, 0));
      // One pass refuses a malformed line as soon as it sees it; two passes may wait for the end first.
      if (two === "incomplete" && one === "refused") continue;
      expect([JSON.stringify(text.slice(0, len)), one]).toEqual([JSON.stringify(text.slice(0, len)), two]);
      if (typeof one === "object") complete++;
    }
  }
  expect(complete).toBeGreaterThan(500);
});

test("a valid head cut anywhere is incomplete, never refused", () => {
  const text = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-A:  spaced  \r\nContent-Length: 5\r\n\r\nhello";
  const bytes = Buffer.from(text, "latin1");
  const end = text.indexOf("\r\n\r\n") + 4;
  for (let len = 0; len < end; len++) expect([len, parseWholeHead(bytes.subarray(0, len), 0)]).toEqual([len, undefined]);
  expect(parseWholeHead(bytes, 0)?.raw.fieldsEnd).toBe(end - 2);
});

test("a head over the size limit is refused whether or not its end is there", () => {
  const big = `HTTP/1.1 200 OK\r\nX-Big: ${"a".repeat(70 * 1024)}`;
  expect(() => parseWholeHead(Buffer.from(big, "latin1"), 0)).toThrow(ProtocolError);
  expect(() => parseWholeHead(Buffer.from(`${big}\r\n\r\n`, "latin1"), 0)).toThrow(ProtocolError);
});
