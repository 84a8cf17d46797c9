/**
 * Header lists as HTTP/2 carries them, both ways. A decoded request or response list is
 * held to HTTP/2's rules for fields (RFC 9113 §8.2, §8.3) and made into the headers
 * object the relays read; one that breaks a rule is malformed: its stream is reset with
 * PROTOCOL_ERROR (§8.1.1), and nothing of it is passed on, so no smuggled field reaches
 * an HTTP/1.1 service or a client. A headers object to send becomes a flat list.
 */
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from "node:http2";
import { TCHAR } from "../../transport/h1/response-head.ts";

/** RFC 3986 §3.1. */
const SCHEME = /^[a-z][a-z0-9+.-]*$/i;
const REQUEST_PSEUDO = new Set([":method", ":scheme", ":authority", ":path"]);
/** Connection-specific fields, which HTTP/2 forbids (§8.2.2). */
const CONNECTION_SPECIFIC = new Set(["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"]);

/** Whether a field name breaks §8.2.1: empty, not a token (RFC 9110 tchar), or upper case. */
function badName(name: string): boolean {
  if (name.length === 0) return true;
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    if (c > 0xff || TCHAR[c] !== 1 || (c >= 0x41 && c <= 0x5a)) return true;
  }
  return false;
}

/** A content-length's value as one number: -1 without one, undefined when it is not one number (§8.1.1 then makes the message malformed). */
export function declaredLength(value: string | string[] | undefined): number | undefined {
  if (value === undefined) return -1;
  return typeof value === "string" && /^\d{1,15}$/.test(value) ? Number(value) : undefined;
}

/** §8.3.1: an absolute path (and query) of visible ASCII, or "*"; never empty, absolute-form or with a space. */
function badPath(path: string | undefined): boolean {
  if (path === undefined || path === "") return true;
  if (path === "*") return false;
  if (path.charCodeAt(0) !== 0x2f /* "/" */) return true;
  for (let i = 1; i < path.length; i++) {
    const c = path.charCodeAt(i);
    if (c <= 0x20 || c >= 0x7f) return true;
  }
  return false;
}

/** §8.2.1: no NUL, CR or LF, and no whitespace at either end. */
function badValue(value: string): boolean {
  const n = value.length;
  if (n === 0) return false;
  const first = value.charCodeAt(0);
  const last = value.charCodeAt(n - 1);
  if (first === 0x20 || first === 0x09 || last === 0x20 || last === 0x09) return true;
  for (let i = 0; i < n; i++) {
    const c = value.charCodeAt(i);
    if (c === 0 || c === 0x0a || c === 0x0d) return true;
  }
  return false;
}

/** Adds a regular field, folding repeats as HTTP/1.1 does (cookie with "; ", set-cookie as a list). */
function add(headers: Record<string, string | string[]>, name: string, value: string): void {
  const known = headers[name];
  if (known === undefined) headers[name] = name === "set-cookie" ? [value] : value;
  else if (Array.isArray(known)) known.push(value);
  else headers[name] = known + (name === "cookie" ? "; " : ", ") + value;
}

/** A request's headers, or what makes them malformed. */
export function requestHeaders(fields: readonly string[]): IncomingHttpHeaders | string {
  const headers: Record<string, string | string[]> = {};
  let regular = false;
  for (let i = 0; i < fields.length; i += 2) {
    const name = fields[i]!;
    const value = fields[i + 1]!;
    if (badValue(value)) return `the value of ${JSON.stringify(name)} has a control character or surrounding whitespace`;
    if (name.charCodeAt(0) === 0x3a /* ":" */) {
      if (regular) return `pseudo-header ${name} after a regular field`;
      if (!REQUEST_PSEUDO.has(name)) return `unknown pseudo-header ${JSON.stringify(name)}`;
      if (headers[name] !== undefined) return `repeated ${name}`;
      headers[name] = value;
      continue;
    }
    regular = true;
    if (badName(name)) return `field name ${JSON.stringify(name)} is not a lower-case token`;
    if (CONNECTION_SPECIFIC.has(name)) return `connection-specific field ${name}`;
    if (name === "te" && value.toLowerCase() !== "trailers") return `te other than "trailers"`;
    add(headers, name, value);
  }
  const method = headers[":method"];
  if (method === undefined || typeof method !== "string" || badName(method.toLowerCase())) return "no :method, or one that is not a token";
  if (method === "CONNECT") {
    if (headers[":authority"] === undefined || headers[":path"] !== undefined || headers[":scheme"] !== undefined) return "a CONNECT request has :authority alone";
  } else if (!SCHEME.test(String(headers[":scheme"] ?? "")) || badPath(headers[":path"] as string | undefined)) return "no :scheme that is a scheme, or a :path that is not an origin-form path or *";
  if (declaredLength(headers["content-length"]) === undefined) return "a content-length that is not one number";
  return headers as IncomingHttpHeaders;
}

/** A response's headers, or what makes them malformed: `:status` alone of the pseudo-headers, first, three digits. */
export function responseHeaders(fields: readonly string[]): IncomingHttpHeaders | string {
  const headers: Record<string, string | string[]> = {};
  if (fields[0] !== ":status" || !/^[1-9]\d\d$/.test(fields[1] ?? "")) return "no :status of three digits first";
  headers[":status"] = fields[1]!;
  const problem = trailerProblem(fields, 2);
  if (problem !== undefined) return problem;
  for (let i = 2; i < fields.length; i += 2) add(headers, fields[i]!, fields[i + 1]!);
  return headers as IncomingHttpHeaders;
}

/** Trailers as a headers object, or what makes them malformed. */
export function trailerHeaders(fields: readonly string[]): IncomingHttpHeaders | string {
  const problem = trailerProblem(fields);
  if (problem !== undefined) return problem;
  const headers: Record<string, string | string[]> = {};
  for (let i = 0; i < fields.length; i += 2) add(headers, fields[i]!, fields[i + 1]!);
  return headers as IncomingHttpHeaders;
}

/** A headers object to send (a response head, trailers, a request) as a flat list, pseudo-headers first, every name in lower case. */
export function outgoingFields(headers: OutgoingHttpHeaders): string[] {
  const fields: string[] = [];
  for (const name in headers) {
    if (name.charCodeAt(0) !== 0x3a) continue;
    const value = headers[name];
    if (value !== undefined) fields.push(name, String(value));
  }
  for (const name in headers) {
    if (name.charCodeAt(0) === 0x3a) continue;
    const value = headers[name];
    if (value === undefined) continue;
    const lower = name.toLowerCase();
    if (Array.isArray(value)) for (const v of value) fields.push(lower, String(v));
    else fields.push(lower, String(value));
  }
  return fields;
}

/** Trailers carry no pseudo-headers (§8.1); the rest of the rules are the request's. */
export function trailerProblem(fields: readonly string[], from = 0): string | undefined {
  for (let i = from; i < fields.length; i += 2) {
    const name = fields[i]!;
    if (name.charCodeAt(0) === 0x3a) return `pseudo-header ${name} in trailers`;
    if (badName(name)) return `field name ${JSON.stringify(name)} is not a lower-case token`;
    if (badValue(fields[i + 1]!)) return `the value of ${JSON.stringify(name)} has a control character or surrounding whitespace`;
    if (CONNECTION_SPECIFIC.has(name)) return `connection-specific field ${name}`;
  }
  return undefined;
}
