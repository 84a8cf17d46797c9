/**
 * Strict HTTP/1.x response-head parsing (RFC 9112), over bytes, in one pass per line.
 * Anything a lenient parser would "repair" is refused, because a proxy that frames a
 * response differently from the next hop is how responses get smuggled: bare LF or CR,
 * obs-fold, control characters, whitespace before the colon, both Content-Length and
 * Transfer-Encoding, disagreeing or non-decimal Content-Lengths, codings other than a
 * lone `chunked`, Transfer-Encoding on HTTP/1.0, heads over 64 KiB.
 */
import { ProtocolError } from "./errors.ts";
import { latin1 } from "./latin1.ts";

/** Largest response head (status line + headers), and largest chunked trailer section. */
export const MAX_HEAD_BYTES = 64 * 1024;

const CR = 13;
const LF = 10;
const SP = 32;
const HT = 9;
const COLON = 58;
const CRLF2 = Buffer.from("\r\n\r\n", "latin1");

/** RFC 9110 tchar: the bytes allowed in a field name. */
export const TCHAR = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") TCHAR[c.charCodeAt(0)] = 1;
/** Bytes allowed in a field value or reason phrase: HTAB, SP, VCHAR, obs-text. */
export const VALUE_BYTE = new Uint8Array(256);
VALUE_BYTE[HT] = 1;
for (let b = 0x20; b <= 0xff; b++) if (b !== 0x7f) VALUE_BYTE[b] = 1;

export interface ResponseHead {
  readonly status: number;
  readonly statusText: string;
  /** HTTP/1.<minor> */
  readonly minor: 0 | 1;
  /** In arrival order, names as sent. */
  readonly headers: [string, string][];
  /** -1 when absent. */
  readonly contentLength: number;
  readonly chunked: boolean;
  /** The upstream allows another exchange on this connection (before body framing is considered). */
  readonly keepAlive: boolean;
  /** The head's bytes as received, every one of them validated, and where each field sits in them. */
  readonly raw: RawHead;
}

export interface RawHead {
  readonly buf: Buffer;
  readonly start: number;
  /** Just past the status line's CRLF; where the first field line starts. */
  readonly fieldsStart: number;
  /** Just past the last field line's CRLF (the blank line follows). */
  readonly fieldsEnd: number;
  /** Per field, four offsets into buf: line start, name end (the colon), value start, value end (OWS trimmed). */
  readonly at: number[];
  /** Lower-cased, trimmed, non-empty tokens of every Connection field; undefined without one. */
  readonly connectionTokens: string[] | undefined;
}

/**
 * A parsed head whose strings are made when read: a relayed response copies its
 * validated field lines as bytes (relay-head.ts) and never needs them.
 */
class ParsedHead implements ResponseHead, RawHead {
  private fields: [string, string][] | undefined;

  constructor(
    readonly status: number,
    readonly minor: 0 | 1,
    readonly contentLength: number,
    readonly chunked: boolean,
    readonly keepAlive: boolean,
    readonly buf: Buffer,
    readonly start: number,
    readonly fieldsStart: number,
    readonly fieldsEnd: number,
    readonly at: number[],
    readonly connectionTokens: string[] | undefined,
  ) {}

  /** Its own raw view: one object per response, not two. */
  get raw(): RawHead {
    return this;
  }

  get statusText(): string {
    const { buf, start, fieldsStart } = this;
    return buf[start + 12] === SP ? latin1(buf, start + 13, fieldsStart - 2) : "";
  }

  get headers(): [string, string][] {
    if (this.fields !== undefined) return this.fields;
    const { buf, at } = this;
    const fields: [string, string][] = [];
    for (let i = 0; i < at.length; i += 4) fields.push([latin1(buf, at[i]!, at[i + 1]!), latin1(buf, at[i + 2]!, at[i + 3]!)]);
    return (this.fields = fields);
  }
}

/** buf[a..a+name.length) equals `name` (lower-case letters and '-') ignoring case; the bytes are tchar, so `| 0x20` cannot confuse two. */
export function nameIs(buf: Buffer, a: number, len: number, name: string): boolean {
  if (len !== name.length) return false;
  for (let j = 0; j < len; j++) if ((buf[a + j]! | 0x20) !== name.charCodeAt(j)) return false;
  return true;
}

/**
 * Index just past the head's blank line in `buf[from..]`, or -1 if not there yet.
 * `scanFrom` is where new bytes start (earlier bytes were already checked for bare LF):
 * a head ended with bare LFs would otherwise only fail at the size limit.
 */
export function findHeadEnd(buf: Buffer, from: number, scanFrom: number): number {
  // Heads end within a few hundred bytes as a rule, and there a JS loop costs less than
  // the native indexOf calls (one per line); a longer head goes on with indexOf.
  const s = Math.max(from, scanFrom);
  const jsTo = Math.min(buf.length, s + SCAN_IN_JS);
  for (let i = s; i < jsTo; i++) {
    if (buf[i] !== LF) continue;
    if (i === from || buf[i - 1] !== CR) throw new ProtocolError("bare LF in the response head");
    if (i - 3 >= from && buf[i - 2] === LF && buf[i - 3] === CR) return headEnd(i + 1, from);
  }
  return jsTo === buf.length ? notComplete(buf, from) : findHeadEndWithIndexOf(buf, from, jsTo);
}

const SCAN_IN_JS = 1024;

function findHeadEndWithIndexOf(buf: Buffer, from: number, scanFrom: number): number {
  const end = buf.indexOf(CRLF2, Math.max(from, scanFrom - 3));
  const checkTo = end < 0 ? buf.length : end;
  for (let i = buf.indexOf(LF, Math.max(from, scanFrom)); i >= 0 && i < checkTo; i = buf.indexOf(LF, i + 1)) {
    if (i === from || buf[i - 1] !== CR) throw new ProtocolError("bare LF in the response head");
  }
  return end < 0 ? notComplete(buf, from) : headEnd(end + 4, from);
}

function headEnd(end: number, from: number): number {
  if (end - from > MAX_HEAD_BYTES) throw new ProtocolError(`response head larger than ${MAX_HEAD_BYTES} bytes`);
  return end;
}

function notComplete(buf: Buffer, from: number): -1 {
  if (buf.length - from > MAX_HEAD_BYTES) throw new ProtocolError(`response head larger than ${MAX_HEAD_BYTES} bytes`);
  return -1;
}

/** The LF ending the line at `pos`, or `end` if none is there yet: a JS loop, as lines are short. */
function lineFeed(buf: Buffer, pos: number, end: number): number {
  while (pos < end && buf[pos] !== LF) pos++;
  return pos;
}

/** Parses `buf[start..end)`, which ends with CRLF CRLF (as found by findHeadEnd). */
export function parseResponseHead(buf: Buffer, start: number, end: number): ResponseHead {
  return parseHead(buf, start, end)!;
}

/**
 * Parses the head at buf[start..] if all of it is there, or returns undefined: one pass
 * where findHeadEnd and parseResponseHead make two, for the common head that arrives in
 * one read. Bytes it saw are checked as parseResponseHead checks them (line endings too).
 */
export function parseWholeHead(buf: Buffer, start: number): ResponseHead | undefined {
  const head = parseHead(buf, start, buf.length);
  if (head === undefined && buf.length - start > MAX_HEAD_BYTES) throw new ProtocolError(`response head larger than ${MAX_HEAD_BYTES} bytes`);
  if (head !== undefined) headEnd(head.raw.fieldsEnd + 2, start);
  return head;
}

/**
 * The head at buf[start..limit), ending at its first blank line; undefined when the bytes
 * run out first (never when findHeadEnd gave `limit` as the head's end).
 */
function parseHead(buf: Buffer, start: number, limit: number): ResponseHead | undefined {
  let lf = lineFeed(buf, start, limit);
  if (lf >= limit) return undefined;
  if (lf === start || buf[lf - 1] !== CR) throw new ProtocolError("bare LF in the response head");
  const minor = parseStatusVersion(buf, start, lf);
  const status = (buf[start + 9]! - 48) * 100 + (buf[start + 10]! - 48) * 10 + (buf[start + 11]! - 48);
  if (buf[start + 12] === SP) for (let i = start + 13; i < lf - 1; i++) if (VALUE_BYTE[buf[i]!] !== 1) throw new ProtocolError("invalid byte in the status line");
  const fieldsStart = lf + 1;

  // Strings only for the fields that decide framing; the rest stay offsets into buf.
  const at: number[] = [];
  let contentLength = -1;
  let te: string | undefined;
  let close = false;
  let keepAliveToken = false;
  let connectionTokens: string[] | undefined;
  let pos = fieldsStart;
  for (;;) {
    const first = buf[pos]!;
    if (pos + 1 >= limit) {
      if (first === LF) throw new ProtocolError("bare LF in the response head");
      return undefined;
    }
    if (first === CR) {
      if (buf[pos + 1] !== LF) throw new ProtocolError("bare CR in the response head");
      break; // the blank line
    }
    if (first === SP || first === HT) throw new ProtocolError("obs-fold (header continuation line) in the response head");
    // One pass over the line: the name's bytes, then the value's up to the CR that must end
    // it (CR is neither tchar nor a value byte, and the blank line ends the head).
    let i = pos;
    while (TCHAR[buf[i]!] === 1) i++;
    if (i >= limit) return undefined;
    if (i === pos) throw new ProtocolError(first === LF ? "bare LF in the response head" : "empty or invalid header name in the response head");
    if (buf[i] !== COLON) throw new ProtocolError("invalid byte in a response header name (or whitespace before the colon)");
    let vs = i + 1;
    while (buf[vs] === SP || buf[vs] === HT) vs++;
    let cr = vs;
    while (VALUE_BYTE[buf[cr]!] === 1) cr++;
    if (cr >= limit || (cr + 1 === limit && buf[cr] === CR)) return undefined;
    if (buf[cr] === LF) throw new ProtocolError("bare LF in the response head");
    if (buf[cr] !== CR || buf[cr + 1] !== LF) throw new ProtocolError(`invalid byte in the response header ${latin1(buf, pos, i)}`);
    lf = cr + 1;
    let ve = cr;
    while (ve > vs && (buf[ve - 1] === SP || buf[ve - 1] === HT)) ve--;
    at.push(pos, i, vs, ve);

    const nameLen = i - pos;
    if (nameIs(buf, pos, nameLen, "content-length")) {
      const n = contentLengthAt(buf, vs, ve);
      if (contentLength !== -1 && n !== contentLength) throw new ProtocolError("conflicting content-length values");
      contentLength = n;
    } else if (nameIs(buf, pos, nameLen, "transfer-encoding")) {
      const value = latin1(buf, vs, ve);
      te = te === undefined ? value : `${te},${value}`;
    } else if (nameIs(buf, pos, nameLen, "connection")) {
      for (const token of latin1(buf, vs, ve).toLowerCase().split(",")) {
        const t = token.trim();
        if (t === "") continue;
        (connectionTokens ??= []).push(t);
        if (t === "close") close = true;
        else if (t === "keep-alive") keepAliveToken = true;
      }
    }
    pos = lf + 1;
  }

  let chunked = false;
  if (te !== undefined) {
    if (minor === 0) throw new ProtocolError("transfer-encoding in an HTTP/1.0 response");
    if (contentLength !== -1) throw new ProtocolError("response has both content-length and transfer-encoding");
    // Only a lone `chunked`: any other coding would reach the client still encoded, and
    // repeated or disguised codings are how framing disagreements start.
    if (te.trim().toLowerCase() !== "chunked") throw new ProtocolError(`unsupported transfer-encoding: ${JSON.stringify(te)}`);
    chunked = true;
  }
  const keepAlive = minor === 1 ? !close : keepAliveToken && !close;
  return new ParsedHead(status, minor, contentLength, chunked, keepAlive, buf, start, fieldsStart, pos, at, connectionTokens);
}

/** Checks `HTTP/1.x SP 3DIGIT (SP | CRLF)` and returns x. */
function parseStatusVersion(buf: Buffer, start: number, lf: number): 0 | 1 {
  // "HTTP/1.1 200" is 12 bytes; a missing reason phrase (and its SP) is tolerated.
  if (lf - 1 - start < 12) throw new ProtocolError("malformed status line");
  if (
    buf[start] !== 72 || // H
    buf[start + 1] !== 84 || // T
    buf[start + 2] !== 84 || // T
    buf[start + 3] !== 80 || // P
    buf[start + 4] !== 47 || // /
    buf[start + 5] !== 49 || // 1
    buf[start + 6] !== 46 || // .
    (buf[start + 7] !== 48 && buf[start + 7] !== 49) ||
    buf[start + 8] !== SP
  )
    throw new ProtocolError("malformed status line (not HTTP/1.0 or HTTP/1.1)");
  for (let i = start + 9; i < start + 12; i++) {
    const d = buf[i]!;
    if (d < 48 || d > 57) throw new ProtocolError("malformed status code");
  }
  const after = buf[start + 12];
  if (after !== SP && start + 12 !== lf - 1) throw new ProtocolError("malformed status line");
  return buf[start + 7] === 49 ? 1 : 0;
}

/**
 * 1*DIGIT, or a list of identical ones ("42, 42", RFC 9110 §8.6). Empty, signed, hex,
 * fractional, spaced or beyond 2^53 values are refused.
 */
export function parseContentLength(value: string): number {
  if (!value.includes(",")) return decimal(value.trim(), value);
  let result = -1;
  for (const part of value.split(",")) {
    const n = decimal(part.trim(), value);
    if (result !== -1 && n !== result) throw new ProtocolError("conflicting content-length values");
    result = n;
  }
  return result;
}

function decimal(v: string, value: string): number {
  if (v.length === 0 || v.length > 15) throw new ProtocolError(`invalid content-length: ${JSON.stringify(value)}`);
  let n = 0;
  for (let i = 0; i < v.length; i++) {
    const d = v.charCodeAt(i) - 48;
    if (d < 0 || d > 9) throw new ProtocolError(`invalid content-length: ${JSON.stringify(value)}`);
    n = n * 10 + d;
  }
  return n;
}

/**
 * The Content-Length whose (OWS-trimmed) value is buf[from..to): a plain number is read
 * from the bytes, with no string made for it; anything else goes through parseContentLength.
 */
export function contentLengthAt(buf: Buffer, from: number, to: number): number {
  if (to - from > 15) return parseContentLength(latin1(buf, from, to));
  let n = 0;
  for (let i = from; i < to; i++) {
    const d = buf[i]! - 48;
    if (d < 0 || d > 9) return parseContentLength(latin1(buf, from, to));
    n = n * 10 + d;
  }
  return to > from ? n : parseContentLength("");
}
