/**
 * Where a request's end-user token is: the headers the service's RequestAuthentication
 * names (default `Authorization: Bearer …`). A value without the location's prefix is no
 * token (`Authorization: Basic …` passes untouched); more than one token is refused, so
 * the token verified is the only one the service could read.
 */
import { inCgiList, sameCgiName } from "../../core/cgi-name.ts";

export interface TokenLocation {
  /** Header name, lower case. */
  name: string;
  /** What precedes the token, lower case, without trailing spaces; matched without regard to case. */
  scheme: string;
  /** The prefix ended in a space: an auth scheme, ended by any run of spaces and tabs. */
  spaced: boolean;
}

/** A location from a rule's `fromHeaders` entry. */
export function tokenLocation(name: string, prefix: string): TokenLocation {
  const scheme = prefix.trimEnd().toLowerCase();
  return { name, scheme, spaced: scheme.length < prefix.length };
}

export interface FoundToken {
  /** The header's whole value. */
  value: string;
  /** Where the token starts in it. */
  at: number;
  /** The header it came in, as the client named it (lower case). */
  header: string;
  /** The location it matched. */
  location: TokenLocation;
}

export const AMBIGUOUS = Symbol("more than one token");

/** Three base64url parts, dot-separated: a JWS in compact form. */
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

/** The token of a value found, or "" when what follows the prefix is no JWS. */
export function tokenOf(found: FoundToken): string {
  const token = found.value.slice(found.at).trim();
  return COMPACT_JWS.test(token) ? token : "";
}

/**
 * Where the request's token is, over every location: undefined when it carries none,
 * AMBIGUOUS when more than one. `fields`: [name0, value0, ...] as parsed (values without
 * surrounding whitespace); `dropped`: names listed in Connection, never forwarded, so
 * never looked in.
 */
export function findToken(fields: readonly string[], dropped: readonly string[], locations: readonly TokenLocation[]): FoundToken | undefined | typeof AMBIGUOUS {
  let found: FoundToken | undefined;
  for (let i = 0; i < fields.length; i += 2) {
    const name = fields[i]!;
    for (const location of locations) {
      if (!sameCgiName(name, location.name)) continue;
      const value = fields[i + 1]!;
      const at = afterPrefix(value, location);
      if (at < 0) continue;
      if (dropped.length > 0 && inCgiList(dropped, name)) break;
      if (found !== undefined) return AMBIGUOUS;
      found = { value, at, header: name, location };
      break;
    }
  }
  return found;
}

/**
 * Where the token starts after the location's prefix, or -1 when the value lacks it. An
 * auth scheme ("bearer ") is ended by any run of spaces and tabs, as parsers that split
 * on whitespace read `Bearer<TAB>token`.
 */
function afterPrefix(value: string, l: TokenLocation): number {
  const scheme = l.scheme;
  if (value.length < scheme.length) return -1;
  for (let k = 0; k < scheme.length; k++) {
    let c = value.charCodeAt(k);
    if (c >= 65 && c <= 90) c += 32; // ASCII upper to lower case
    if (c !== scheme.charCodeAt(k)) return -1;
  }
  if (!l.spaced) return scheme.length;
  let at = scheme.length;
  while (at < value.length && (value[at] === " " || value[at] === "\t")) at++;
  return at > scheme.length ? at : -1;
}
