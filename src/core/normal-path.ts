/**
 * The one form of a request path that authorization matches and the local service
 * receives: a rule and the service must never read the same path two ways
 * (threats.md, "Paths, hosts and headers in authorization"). RFC 3986 §6.2.2: escapes of
 * unreserved characters decoded (`%61dmin` is `admin`), other escapes in upper case, dot
 * segments removed (`/a/../admin`, `/a/%2e%2e/admin`), and repeated slashes merged
 * (`//admin`), which many frameworks do on their own. What cannot be put in one form is
 * refused: an escaped slash or backslash (`%2F`, `%5C`: the service may decode them into
 * separators after the rule matched; kept as data instead, in upper case, for a service
 * declared to read them as data, `keepEscapedSlashes`), a backslash, a bad or control-character escape, and
 * a `;` (path parameters: servlet containers and Spring strip `;…` from every segment, so
 * `/admin;x` and `/..;/admin` are read as `/admin` and `/../admin`; Spring Security's
 * strict firewall refuses them too). The query is left as sent.
 */

/** Why a path cannot be put in normal form; the request is refused with it. */
export class PathRefusal {
  constructor(readonly detail: string) {}
}

const PERCENT = 37;
const SLASH = 47;
const DOT = 46;
const BACKSLASH = 92;
const QUESTION = 63;
const SEMICOLON = 59;
const HEX = "0123456789ABCDEF";

/** RFC 3986 §2.3 unreserved: ALPHA / DIGIT / "-" / "." / "_" / "~". */
const UNRESERVED = new Uint8Array(128);
for (let c = 0; c < 128; c++) {
  const ch = String.fromCharCode(c);
  if (/[A-Za-z0-9._~-]/.test(ch)) UNRESERVED[c] = 1;
}

/**
 * `target` (origin-form, or "*") with its path in normal form: `target` itself when it
 * already is, which is the common case and costs one scan without allocating.
 */
export function normalTarget(target: string, keepEscapedSlashes = false): string | PathRefusal {
  if (isNormal(target)) return target;
  const end = pathEnd(target);
  const path = normalPath(target, end, keepEscapedSlashes);
  if (path instanceof PathRefusal) return path;
  return end === target.length ? path : path + target.slice(end);
}

/** The path part of a target in normal form: what authorization rules match. */
export function pathOf(target: string): string {
  const end = pathEnd(target);
  return end === target.length ? target : target.slice(0, end);
}

function pathEnd(target: string): number {
  const q = target.indexOf("?");
  return q < 0 ? target.length : q;
}

/** No escape, no backslash, no empty or dot segment before the query: nothing for normalPath to change. */
function isNormal(t: string): boolean {
  for (let i = 0; i < t.length; i++) {
    const c = t.charCodeAt(i);
    if (c === QUESTION) return true;
    if (c === PERCENT || c === BACKSLASH || c === SEMICOLON) return false;
    if (c === SLASH) {
      const next = t.charCodeAt(i + 1);
      if (next === SLASH || next === DOT) return false;
    }
  }
  return true;
}

function normalPath(t: string, end: number, keepEscapedSlashes: boolean): string | PathRefusal {
  if (t.charCodeAt(0) !== SLASH) return t.slice(0, end); // "*": nothing to normalize
  const decoded = decodeUnreserved(t, end, keepEscapedSlashes);
  if (decoded instanceof PathRefusal) return decoded;
  return withoutDotSegments(decoded);
}

function decodeUnreserved(t: string, end: number, keepEscapedSlashes: boolean): string | PathRefusal {
  let out = "";
  for (let i = 0; i < end; i++) {
    const c = t.charCodeAt(i);
    if (c === BACKSLASH) return new PathRefusal("a backslash in the path");
    if (c === SEMICOLON) return new PathRefusal("a ';' (path parameters) in the path");
    if (c !== PERCENT) {
      out += t[i];
      continue;
    }
    const hi = hexValue(t.charCodeAt(i + 1));
    const lo = hexValue(t.charCodeAt(i + 2));
    if (i + 2 >= end || hi < 0 || lo < 0) return new PathRefusal("a '%' in the path that is not followed by two hex digits");
    const byte = hi * 16 + lo;
    if ((byte === SLASH || byte === BACKSLASH) && !keepEscapedSlashes) return new PathRefusal("an escaped slash or backslash (%2F, %5C) in the path");
    if (byte < 0x20 || byte === 0x7f) return new PathRefusal("an escaped control character in the path");
    out += byte < 128 && UNRESERVED[byte] === 1 ? String.fromCharCode(byte) : `%${HEX[hi]}${HEX[lo]}`;
    i += 2;
  }
  return out;
}

/** RFC 3986 §5.2.4 over segments, with empty segments merged away; a trailing slash stays. */
function withoutDotSegments(path: string): string {
  const segments = path.split("/");
  const kept: string[] = [];
  let trailingSlash = false;
  for (let k = 1; k < segments.length; k++) {
    const s = segments[k]!;
    const last = k === segments.length - 1;
    if (s === "" || s === "." || s === "..") {
      if (s === "..") kept.pop();
      trailingSlash = last;
      continue;
    }
    kept.push(s);
    trailingSlash = false;
  }
  if (kept.length === 0) return "/";
  return `/${kept.join("/")}${trailingSlash ? "/" : ""}`;
}

function hexValue(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 65 && c <= 70) return c - 55;
  if (c >= 97 && c <= 102) return c - 87;
  return -1;
}

/**
 * Exported for the schema: whether a rule's path is one a normalized request could have.
 * `%2F` and `%5C` (upper case) are allowed: they match on sidecars that keep escaped
 * slashes, and nothing elsewhere, which refuses such requests.
 */
export function isNormalPath(path: string): boolean {
  return normalTarget(path, true) === path && path.indexOf("?") < 0;
}
