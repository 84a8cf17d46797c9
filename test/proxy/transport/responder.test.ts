/**
 * The lines that end a response head (Responder.start): framing and Connection for the
 * client's version and the connection's fate. Kept-alive HTTP/1.1 tails with small
 * lengths are made once; whatever came before, each tail says what this response needs.
 */
import { expect, test } from "bun:test";
import { Responder, type ResponderHost, type ResponseBodyKind } from "../../../src/proxy/transport/h1-server/responder.ts";

function tail(kind: ResponseBodyKind, length: number, opts: { minor?: 0 | 1; ends?: boolean; isHead?: boolean } = {}): string | undefined {
  const host: ResponderHost = {
    write: () => true,
    writeLater: () => true,
    responseDone: () => {},
    abort: () => {},
    // As the connection does: a body only the close ends is the connection's last.
    endsAfterResponse: (closeDelimited) => closeDelimited || (opts.ends ?? false),
    minor: opts.minor ?? 1,
  };
  return new Responder(host, opts.isHead ?? false).start(kind, length);
}

test("HTTP/1.1 kept alive: the length and the blank line, for lengths made once and lengths past them", () => {
  for (const length of [0, 100, 100, 4095, 4096, 1 << 20]) expect(tail("length", length)).toBe(`content-length: ${length}\r\n\r\n`);
});

test("a length seen kept alive first is still closed, or kept alive for HTTP/1.0, when the connection needs it", () => {
  expect(tail("length", 100)).toBe("content-length: 100\r\n\r\n");
  expect(tail("length", 100, { ends: true })).toBe("content-length: 100\r\nconnection: close\r\n\r\n");
  expect(tail("length", 100, { minor: 0 })).toBe("content-length: 100\r\nconnection: keep-alive\r\n\r\n");
  expect(tail("length", 100, { minor: 0, ends: true })).toBe("content-length: 100\r\nconnection: close\r\n\r\n");
  expect(tail("length", 100)).toBe("content-length: 100\r\n\r\n");
});

test("chunked for HTTP/1.1, a close-delimited body for HTTP/1.0, and no body with or without a stated length", () => {
  expect(tail("chunked", -1)).toBe("transfer-encoding: chunked\r\n\r\n");
  expect(tail("chunked", -1, { minor: 0 })).toBe("connection: close\r\n\r\n");
  // The connection is told the body ends with it, so it ends after this response.
  const told: boolean[] = [];
  const host: ResponderHost = { write: () => true, writeLater: () => true, responseDone: () => {}, abort: () => {}, endsAfterResponse: (closeDelimited) => (told.push(closeDelimited), closeDelimited), minor: 0 };
  new Responder(host, false).start("chunked", -1);
  expect(told).toEqual([true]);
  expect(tail("none", 42, { isHead: true })).toBe("content-length: 42\r\n\r\n");
  expect(tail("none", -1)).toBe("\r\n");
});

test("a second start on the same response gives nothing: the head went out already", () => {
  const host: ResponderHost = { write: () => true, writeLater: () => true, responseDone: () => {}, abort: () => {}, endsAfterResponse: () => false, minor: 1 };
  const res = new Responder(host, false);
  expect(res.start("length", 5)).toBe("content-length: 5\r\n\r\n");
  expect(res.start("length", 5)).toBeUndefined();
});

test("a response goes out whole as the upstream sent it only when this side adds nothing: HTTP/1.1, kept alive, not HEAD", () => {
  const written: string[] = [];
  const record = (data: string | Uint8Array, start = 0, end?: number) => (written.push(typeof data === "string" ? data : Buffer.from(data.subarray(start, end)).toString("latin1")), true);
  const host = (minor: 0 | 1, ends: boolean): ResponderHost => ({
    write: record,
    writeLater: record,
    responseDone: () => {},
    abort: () => {},
    endsAfterResponse: () => ends,
    minor,
  });
  expect(new Responder(host(0, false), false).startWhole()).toBe(false);
  expect(new Responder(host(1, true), false).startWhole()).toBe(false);
  expect(new Responder(host(1, false), true).startWhole()).toBe(false);
  const res = new Responder(host(1, false), false);
  expect(res.startWhole()).toBe(true);
  expect(res.start("length", 5)).toBeUndefined(); // the head is out
  const bytes = Buffer.from("xxHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhiyy", "latin1");
  res.sendWhole(bytes, 2, bytes.length - 2);
  res.write(bytes, bytes.length - 4, bytes.length - 2); // the body pieces that follow are already out
  res.end();
  expect(written).toEqual(["HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"]);
});
