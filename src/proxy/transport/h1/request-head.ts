/**
 * The request head, built once per request as one string (one write, one TLS record),
 * or a relayed head's own bytes when rebuilding would not change what it says, and the
 * body framing the client will use. This client owns the connection and the
 * framing, so the caller's connection-level headers (Connection, Keep-Alive,
 * Transfer-Encoding, TE, Upgrade, Proxy-Connection) are not forwarded: the body is
 * sent with the caller's Content-Length when it gave one, chunked otherwise.
 */
import { TCHAR } from "./response-head.ts";
import { fieldValue, type RequestHead } from "./request-parse.ts";
import { inCgiList, inCgiSet } from "../../../core/cgi-name.ts";

export type RequestFraming = { kind: "none" } | { kind: "length"; length: number } | { kind: "chunked" };

export interface PreparedRequest {
  method: string;
  /**
   * The whole head, CRLF CRLF included, at head[headStart..headEnd): a string when ASCII
   * (written as is), latin1 bytes otherwise, or the bytes a relayed head arrived in.
   */
  head: string | Uint8Array;
  headStart: number;
  headEnd: number;
  framing: RequestFraming;
  /** HEAD: the response never has a body, whatever its headers say. */
  isHead: boolean;
  /**
   * Sending it again cannot do harm: no body, and an idempotent method or an
   * Idempotency-Key (the rule of Go's net/http for the keep-alive race).
   */
  replayable: boolean;
}

/** Connection-level request headers this client decides itself. */
const OWN = new Set(["connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "upgrade", "host", "content-length"]);
const NO_BODY: RequestFraming = { kind: "none" };
const CHUNKED: RequestFraming = { kind: "chunked" };
const IDEMPOTENT = new Set(["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"]);
/** Methods whose empty body must still be announced (RFC 9110 §8.6). */
const BODY_EXPECTED = new Set(["POST", "PUT", "PATCH"]);

/** Any byte outside what this client writes as plain ASCII (HTAB, CR/LF it adds, SP..~). */
const NOT_PLAIN = /[^\t\r\n\x20-\x7e]/;
/** Control characters Headers accepts but HTTP forbids in a field value. */
const CONTROL = /[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]/;

/**
 * @param defaultHost used when the caller's headers have no Host (e.g. "10.0.0.1:8080").
 * @throws TypeError for a request this client must not send (bad method or target,
 *   content-length without a body or not decimal, control characters in a header).
 */
export function prepareRequest(method: string, pathAndQuery: string, headers: Headers, hasBody: boolean, defaultHost: string): PreparedRequest {
  checkMethod(method);
  checkTarget(pathAndQuery);

  // One pass over the headers (names come lower-cased) instead of a get() per special name.
  let fields = "";
  let host: string | null = null;
  let cl: string | null = null;
  let idempotencyKey = "";
  headers.forEach((value, name) => {
    if (!OWN.has(name)) {
      fields += `${name}: ${value}\r\n`;
      if (name === "idempotency-key") idempotencyKey = value;
    } else if (name === "host") host = value;
    else if (name === "content-length") cl = value;
  });

  let framing: RequestFraming;
  if (cl !== null) {
    const length = decimal(cl);
    if (!hasBody && length !== 0) throw new TypeError(`content-length ${cl} given for a request without a body`);
    framing = hasBody ? { kind: "length", length } : NO_BODY;
  } else framing = hasBody ? CHUNKED : NO_BODY;
  return finish(method, `${method} ${pathAndQuery} HTTP/1.1\r\nhost: ${host ?? defaultHost}\r\n${fields}`, framing, cl !== null, idempotencyKey !== "", false);
}

/** Whole header lines a relay adds to every head, checked once rather than per request. */
export interface AddedLines {
  text: string;
  /** The lines as bytes when printable ASCII (they can join a head as received); otherwise undefined. */
  bytes: Buffer | undefined;
}

export function addedLines(text: string): AddedLines {
  return { text, bytes: NOT_PLAIN.test(text) ? undefined : Buffer.from(text, "latin1") };
}

export const NO_ADDED_LINES: AddedLines = addedLines("");

/** What prepareRelayed takes of a parsed request head (request-parse.ts). */
export type RelayedRequestHead = Pick<
  RequestHead,
  "start" | "end" | "method" | "target" | "pathAndQuery" | "minor" | "host" | "fields" | "connectionTokens" | "obsText" | "contentLength" | "chunked"
>;

/**
 * The head of a request relayed from a downstream connection, whose parser already
 * checked method, target and field syntax (fields: flat name/value pairs, names
 * lower-cased). Fields named in `skip` or in the client's Connection tokens are dropped;
 * `extra` (whole lines, made once with addedLines) is added, and the framing line for `framing`.
 *
 * `received`: the bytes the head arrived in (at req.start..req.end). A head this would
 * only rewrite in form (letter case, field order) is sent as it came, `extra` added
 * before its blank line, with no string made: see asReceived.
 */
export function prepareRelayed(
  req: RelayedRequestHead,
  skip: ReadonlySet<string>,
  extra: AddedLines,
  framing: RequestFraming,
  received?: Uint8Array,
  /** Whole lines of printable ASCII added after `extra`, made per request (a span's traceparent): written into the head without a buffer of their own. */
  tail = "",
): PreparedRequest {
  const { method, fields, connectionTokens: listed } = req;
  // The lines added must be plain ASCII to be written as bytes; anything else is checked by finish().
  if (received !== undefined && extra.bytes !== undefined && asReceived(req, skip) && !hasTab(received, req.start, req.end)) {
    // The key is only looked for when the method alone does not make the request replayable.
    const keyed = !IDEMPOTENT.has(method) && fieldValue(fields, "idempotency-key") !== undefined;
    if (extra.bytes.byteLength === 0 && tail === "") return prepared(method, received, req.start, req.end, framing, keyed);
    const head = withLines(received, req.start, req.end, extra.bytes, tail);
    return prepared(method, head, 0, head.byteLength, framing, keyed);
  }
  let head = `${method} ${req.pathAndQuery} HTTP/1.1\r\nhost: ${req.host}\r\n`;
  let idempotencyKey = false;
  for (let i = 0; i < fields.length; i += 2) {
    const name = fields[i]!;
    // Either spelling (core/cgi-name.ts): a copy of x-mesh-client-id as x_mesh_client_id would stand in for the proxy's.
    if (inCgiSet(skip, name) || (listed.length > 0 && inCgiList(listed, name))) continue;
    if (name === "idempotency-key") idempotencyKey = true;
    head += `${name}: ${fields[i + 1]}\r\n`;
  }
  // The parser checked every byte it let through; only obs-text or the lines added here can be other than printable ASCII.
  const plain = !req.obsText && extra.bytes !== undefined;
  return finish(method, head + extra.text + tail, framing, framing.kind === "length", idempotencyKey, plain);
}

/**
 * Whether the head as received says what prepareRelayed would write: HTTP/1.1, the
 * target as it goes upstream (origin- or asterisk-form), no field to drop but Host (the
 * same value, where the client put it) and a Content-Length the rebuilt head would carry
 * too, in plain form (digits, no leading zero). Letter case and field order may differ;
 * they mean nothing. A chunked body, a POST, PUT or PATCH without a length (which gets
 * "content-length: 0" added) and a bodiless method's "Content-Length: 0" (dropped) are
 * rebuilt.
 */
function asReceived(req: RelayedRequestHead, skip: ReadonlySet<string>): boolean {
  if (req.minor !== 1 || req.pathAndQuery !== req.target || req.chunked) return false;
  const length = req.contentLength;
  if (length < 0 ? BODY_EXPECTED.has(req.method) : length === 0 && !BODY_EXPECTED.has(req.method)) return false;
  if (req.connectionTokens.length > 0) return false; // the fields it lists are dropped
  const fields = req.fields;
  for (let i = 0; i < fields.length; i += 2) {
    const name = fields[i]!;
    if (name === "content-length") {
      const value = fields[i + 1]!;
      if (value.charCodeAt(0) === 48 && value.length > 1) return false;
    } else if (name !== "host" && inCgiSet(skip, name)) return false;
  }
  return true;
}

/**
 * Whether buf[start..end) holds a tab. A field whose whitespace is a tab (`Content-Length:\t3`)
 * means the same to this parser, but not to every server (nginx refuses it): a head with
 * one is rebuilt, each field `name: value`, so that no parser behind reads it otherwise.
 */
function hasTab(buf: Uint8Array, start: number, end: number): boolean {
  for (let i = start; i < end; i++) if (buf[i] === 9) return true;
  return false;
}

/** buf[start..end) (a head, ending with its blank line) with `lines`, then `tail` (ASCII), inserted before the blank line. */
function withLines(buf: Uint8Array, start: number, end: number, lines: Buffer, tail: string): Buffer {
  const fields = end - 2 - start;
  const out = Buffer.allocUnsafe(fields + lines.byteLength + tail.length + 2);
  // Buffer's copy takes a range of any Uint8Array: no view of it is made.
  Buffer.prototype.copy.call(buf, out, 0, start, end - 2);
  lines.copy(out, fields);
  if (tail !== "") out.write(tail, fields + lines.byteLength, "latin1");
  out[out.length - 2] = 13;
  out[out.length - 1] = 10;
  return out;
}

/**
 * Adds the framing line and the blank line; the head goes out as ASCII, or as latin1
 * bytes. `plain`: it is known to be printable ASCII already, so it is not scanned again.
 */
function finish(method: string, start: string, framing: RequestFraming, declaredLength: boolean, idempotencyKey: boolean, plain: boolean): PreparedRequest {
  let framingLine = "";
  if (framing.kind === "length" || (declaredLength && framing.kind === "none")) framingLine = `content-length: ${framing.kind === "length" ? framing.length : 0}\r\n`;
  else if (framing.kind === "chunked") framingLine = "transfer-encoding: chunked\r\n";
  else if (BODY_EXPECTED.has(method)) framingLine = "content-length: 0\r\n";
  const head = `${start}${framingLine}\r\n`;
  let bytes: string | Uint8Array = head;
  if (!plain && NOT_PLAIN.test(head)) {
    if (CONTROL.test(head)) throw new TypeError("control character in a request header");
    // Headers hold ByteStrings (every code unit <= 0xFF); socket.write(string) would send UTF-8.
    bytes = Buffer.from(head, "latin1");
  }
  return prepared(method, bytes, 0, typeof bytes === "string" ? bytes.length : bytes.byteLength, framing, idempotencyKey);
}

/** A prepared request whose head is head[headStart..headEnd); `idempotencyKey`: the caller sent an Idempotency-Key. */
function prepared(method: string, head: string | Uint8Array, headStart: number, headEnd: number, framing: RequestFraming, idempotencyKey: boolean): PreparedRequest {
  return { method, head, headStart, headEnd, framing, isHead: method === "HEAD", replayable: framing.kind === "none" && (IDEMPOTENT.has(method) || idempotencyKey) };
}

function checkMethod(method: string): void {
  if (method.length === 0) throw new TypeError("empty request method");
  for (let i = 0; i < method.length; i++) {
    const c = method.charCodeAt(i);
    if (c > 255 || TCHAR[c] !== 1) throw new TypeError(`invalid request method ${JSON.stringify(method)}`);
  }
  if (method === "CONNECT") throw new TypeError("CONNECT is not supported by this client");
}

/** origin-form ("/path?query") or "*"; visible ASCII only, so nothing can split the request line. */
function checkTarget(target: string): void {
  if (target !== "*" && target.charCodeAt(0) !== 47 /* / */) throw new TypeError(`request target must start with "/": ${JSON.stringify(target)}`);
  for (let i = 0; i < target.length; i++) {
    const c = target.charCodeAt(i);
    if (c < 0x21 || c > 0x7e) throw new TypeError(`invalid character in the request target ${JSON.stringify(target)}`);
  }
}

function decimal(value: string): number {
  if (value.length === 0 || value.length > 15) throw new TypeError(`invalid content-length ${JSON.stringify(value)}`);
  let n = 0;
  for (let i = 0; i < value.length; i++) {
    const d = value.charCodeAt(i) - 48;
    if (d < 0 || d > 9) throw new TypeError(`invalid content-length ${JSON.stringify(value)}`);
    n = n * 10 + d;
  }
  return n;
}
