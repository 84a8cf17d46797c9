/**
 * prepareRelayed given the bytes a head arrived in: sent as received only when that says
 * what the rebuilt head says (the same request line, fields and framing; letter case and
 * field order aside), and otherwise rebuilt exactly as without them.
 */
import { expect, test } from "bun:test";
import { RELAY_SKIP } from "../../../src/proxy/headers.ts";
import { addedLines, NO_ADDED_LINES, prepareRelayed, type PreparedRequest } from "../../../src/proxy/transport/h1/request-head.ts";
import { findRequestHeadEnd, parseRequestHead, type RequestHead } from "../../../src/proxy/transport/h1/request-parse.ts";
import { requestFraming } from "../../../src/proxy/transport/h1-server/request-framing.ts";
import { seeded } from "../../helpers/prng.ts";

function parsed(bytes: Buffer): RequestHead {
  return parseRequestHead(bytes, 0, findRequestHeadEnd(bytes, 0, 0));
}

/** The head a prepared request writes, as latin1 text. */
function textOf(p: PreparedRequest): string {
  return typeof p.head === "string" ? p.head : Buffer.from(p.head.subarray(p.headStart, p.headEnd)).toString("latin1");
}

/** What a head means upstream: letter case of names and the order of fields aside. */
function meaning(h: RequestHead) {
  const fields: string[] = [];
  for (let i = 0; i < h.fields.length; i += 2) fields.push(`${h.fields[i]}: ${h.fields[i + 1]}`);
  return { method: h.method, target: h.target, minor: h.minor, host: h.host, contentLength: h.contentLength, chunked: h.chunked, fields: fields.sort() };
}

test("3,000 heads: as received only when it means what the rebuilt head means", () => {
  const random = seeded(17);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)]!;
  const lines = ["Accept: */*", "X-A: 1", "Content-Length: 0", "Content-Length: 3", "Content-Length: 03", "Connection: keep-alive", "Connection: x-a", "Keep-Alive: 5", "TE: trailers",
    "X-Mesh-Client-Id: spiffe://x", "L5d-Client-Id: y", "Idempotency-Key: k", "Transfer-Encoding: chunked", "Expect: 100-continue", "Upgrade: websocket", "X-B: caf\xe9"];
  let asReceived = 0;
  let rebuilt = 0;
  for (let i = 0; i < 3_000; i++) {
    const fields = Array.from({ length: Math.floor(random() * 3) }, () => pick(lines));
    fields.splice(Math.floor(random() * (fields.length + 1)), 0, "Host: payments");
    const text = `${pick(["GET", "POST", "PUT", "HEAD", "DELETE"])} ${pick(["/", "/a?b=1", "http://payments/x", "*"])} HTTP/1.${pick([0, 1])}\r\n${fields.map((f) => `${f}\r\n`).join("")}\r\n`;
    const bytes = Buffer.from(`\r\n${text}`, "latin1");
    let head: RequestHead;
    try {
      head = parseRequestHead(bytes, 0, findRequestHeadEnd(bytes, 0, 0));
    } catch {
      continue; // refused before any relaying
    }
    const framing = requestFraming(head);
    const extra = pick([NO_ADDED_LINES, addedLines("x-mesh-client-id: spiffe://mesh.local/ns/default/sa/orders\r\n")]);
    const built = prepareRelayed(head, RELAY_SKIP, extra, framing);
    const sent = prepareRelayed(head, RELAY_SKIP, extra, framing, bytes);
    expect({ framing: sent.framing, isHead: sent.isHead, replayable: sent.replayable, method: sent.method }).toEqual({
      framing: built.framing, isHead: built.isHead, replayable: built.replayable, method: built.method,
    });
    const sentText = textOf(sent);
    if (sentText !== textOf(built)) {
      asReceived++;
      // The request as the client wrote it, with the added lines before its blank line.
      expect(sentText).toBe(`${text.slice(0, -2)}${extra.text}\r\n`);
      expect(meaning(parsed(Buffer.from(sentText, "latin1")))).toEqual(meaning(parsed(Buffer.from(textOf(built), "latin1"))));
    } else {
      rebuilt++;
      expect(sent).toEqual(built);
    }
  }
  // Both paths were taken often enough to mean something.
  expect(asReceived).toBeGreaterThan(200);
  expect(rebuilt).toBeGreaterThan(200);
});

test("lines to add go before the blank line of a head sent as received; lines that are not ASCII make it rebuilt", () => {
  const bytes = Buffer.from("\r\nGET / HTTP/1.1\r\nHost: payments\r\n\r\n", "latin1");
  const head = parsed(bytes);
  const identity = "x-mesh-client-id: spiffe://mesh.local/ns/default/sa/orders\r\n";
  const sent = prepareRelayed(head, RELAY_SKIP, addedLines(identity), requestFraming(head), bytes);
  expect(textOf(sent)).toBe(`GET / HTTP/1.1\r\nHost: payments\r\n${identity}\r\n`);
  expect(() => prepareRelayed(head, RELAY_SKIP, addedLines("x-a: \x01\r\n"), requestFraming(head), bytes)).toThrow("control character");
  const wide = prepareRelayed(head, RELAY_SKIP, addedLines("x-a: caf\xe9\r\n"), requestFraming(head), bytes);
  expect(textOf(wide)).toBe("GET / HTTP/1.1\r\nhost: payments\r\nx-a: caf\xe9\r\n\r\n");
});
