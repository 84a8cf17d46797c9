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
    const value = fields[i + 1]!;
    const location = locationOf(name, value, locations);
    if (location === undefined || dropped.includes(name)) continue;
    if (found !== undefined) return AMBIGUOUS;
    const token = value.trim().slice(location.prefix.length).trim();
    found = { token: COMPACT_JWS.test(token) ? token : "", header: name, location };
  }
  return found;
}

/**
 * The location a header is, by name and prefix. "_" in a name is read as "-": CGI-style
 * servers (WSGI, Rack, PHP) read `x_token` as `x-token`, so a token there is verified too.
 */
function locationOf(name: string, value: string, locations: readonly TokenLocation[]): TokenLocation | undefined {
  for (const l of locations) {
    if (l.name !== name && !(name.includes("_") && name.replaceAll("_", "-") === l.name)) continue;
    const v = value.trimStart();
    if (v.length >= l.prefix.length && v.slice(0, l.prefix.length).toLowerCase() === l.prefix) return l;
  }
  return undefined;
}
