/**
 * Where a request's end-user token is: the headers the service's RequestAuthentication
 * names (default `Authorization: Bearer …`). A value without the location's prefix is no
 * token (`Authorization: Basic …` passes untouched); more than one token is refused, so
 * the token verified is the only one the service could read.
 */

export interface TokenLocation {
  /** Header name, lower case. */
  name: string;
  /** What precedes the token, lower case; matched without regard to case. */
  prefix: string;
}

export interface FoundToken {
  token: string;
  /** The header it came in, as the client named it (lower case). */
  header: string;
  /** The location it matched. */
  location: TokenLocation;
}

export const AMBIGUOUS = Symbol("more than one token");

/** Three base64url parts, dot-separated: a JWS in compact form. */
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

/**
 * The token a request carries, over every location: undefined when none, AMBIGUOUS when
 * more than one, and "" as the token when a value has the prefix but no JWS after it.
 * `fields`: [name0, value0, ...] as parsed; `dropped`: names listed in Connection, never
 * forwarded, so never looked in.
 */
export function findToken(fields: readonly string[], dropped: readonly string[], locations: readonly TokenLocation[]): FoundToken | undefined | typeof AMBIGUOUS {
  let found: FoundToken | undefined;
  for (let i = 0; i < fields.length; i += 2) {
    const name = fields[i]!;
    const value = fields[i + 1]!.trim();
    const match = locationOf(name, value, locations);
    if (match === undefined || dropped.includes(name)) continue;
    if (found !== undefined) return AMBIGUOUS;
    const token = value.slice(match.at).trim();
    found = { token: COMPACT_JWS.test(token) ? token : "", header: name, location: match.location };
  }
  return found;
}

/**
 * The location a header is, by name and prefix. "_" in a name is read as "-": CGI-style
 * servers (WSGI, Rack, PHP) read `x_token` as `x-token`, so a token there is verified too.
 */
function locationOf(name: string, value: string, locations: readonly TokenLocation[]): { location: TokenLocation; at: number } | undefined {
  for (const l of locations) {
    if (l.name !== name && !(name.includes("_") && name.replaceAll("_", "-") === l.name)) continue;
    const at = afterPrefix(value, l.prefix);
    if (at >= 0) return { location: l, at };
  }
  return undefined;
}

/**
 * Where the token starts after `prefix` (lower case), or -1 when the value lacks it. A
 * prefix that ends in a space is an auth scheme ("bearer "): any run of spaces and tabs
 * ends it, as parsers that split on whitespace read `Bearer<TAB>token`.
 */
function afterPrefix(value: string, prefix: string): number {
  const scheme = prefix.trimEnd();
  if (value.length < scheme.length || value.slice(0, scheme.length).toLowerCase() !== scheme) return -1;
  if (scheme.length === prefix.length) return scheme.length;
  let at = scheme.length;
  while (at < value.length && (value[at] === " " || value[at] === "\t")) at++;
  return at > scheme.length ? at : -1;
}
