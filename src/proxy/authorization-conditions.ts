/**
 * The `when` conditions of AuthorizationPolicy rules: over a request's headers, read the
 * way that refuses (a client chooses how to split and repeat them), and over the claims
 * of its verified end-user token (signed, so read plainly).
 */
import { inCgiList, sameCgiName } from "../core/cgi-name.ts";

/** The headers a condition reads: [name0, value0, ...] as parsed, and the names not forwarded. */
export interface HeadersSeen {
  fields: readonly string[];
  /** Listed in Connection, or a claim header: removed before the service, so not seen. */
  dropped: readonly string[];
}

/** A condition's lists; at least one is set. */
export interface ValueLists {
  values?: ReadonlySet<string>;
  notValues?: ReadonlySet<string>;
}

/**
 * A header's elements are every comma-separated value over all its lines. A client can
 * repeat a header or join values to make one rule and the service read it differently,
 * so the reading that refuses wins. An allow rule's condition holds when there is an
 * element, every element is in `values` and none in `notValues`; a deny rule's, when any
 * element is in `values`, or (with `notValues`) any element is not in it or there is none.
 * A name with "_" counts as the same name with "-": CGI-style servers (WSGI, Rack, PHP)
 * read both as one variable.
 */
export function headerHolds(req: HeadersSeen, header: string, lists: ValueLists, action: "allow" | "deny"): boolean {
  const { values, notValues } = lists;
  // One pass, no list of elements built: this runs on every request a rule with a header condition reads.
  let seen = false;
  let anyListed = false;
  let anyOutsideNot = false;
  const fields = req.fields;
  for (let i = 0; i < fields.length; i += 2) {
    const name = fields[i]!;
    if (!sameCgiName(name, header)) continue;
    if (req.dropped.length > 0 && inCgiList(req.dropped, name)) continue;
    for (const part of fields[i + 1]!.split(",")) {
      const element = withoutOws(part);
      if (element === "") continue;
      seen = true;
      const listed = values?.has(element) ?? false;
      const excluded = notValues?.has(element) ?? false;
      if (action === "allow" && ((values !== undefined && !listed) || excluded)) return false;
      anyListed ||= listed;
      anyOutsideNot ||= !excluded;
    }
  }
  if (action === "allow") return values === undefined || seen;
  return (values === undefined || anyListed) && (notValues === undefined || !seen || anyOutsideNot);
}

const NO_ELEMENTS: readonly string[] = [];

/** A list element without the spaces and tabs around it (RFC 9110 OWS), and nothing else: String#trim also takes U+00A0, which the service keeps. */
function withoutOws(s: string): string {
  let start = 0;
  let end = s.length;
  while (start < end && (s.charCodeAt(start) === 32 || s.charCodeAt(start) === 9)) start++;
  while (end > start && (s.charCodeAt(end - 1) === 32 || s.charCodeAt(end - 1) === 9)) end--;
  return start === 0 && end === s.length ? s : s.slice(start, end);
}

/**
 * A claim's values are its string (or number or boolean, as text), the strings (numbers,
 * booleans) of its list, or the scopes of the `scope` claim, which OAuth writes space-separated. The token
 * is signed, so no reading of it can differ from the service's: `values` holds when one
 * is listed, `notValues` when none is (an absent claim, or no token, holds none), for an
 * allow rule and a deny rule alike.
 */
export function claimHolds(claims: Readonly<Record<string, unknown>> | undefined, path: readonly string[], lists: ValueLists): boolean {
  const held = claims === undefined ? NO_ELEMENTS : claimValues(claimAt(claims, path), path.at(-1) === "scope");
  if (lists.values !== undefined && !held.some((v) => lists.values!.has(v))) return false;
  return lists.notValues === undefined || !held.some((v) => lists.notValues!.has(v));
}

function claimValues(v: unknown, scope: boolean): readonly string[] {
  if (typeof v === "string") return scope ? v.split(" ") : [v];
  if (typeof v === "number" || typeof v === "boolean") return [String(v)];
  // In a list too, a number or boolean counts as its text: [7] holds "7" as 7 does.
  return Array.isArray(v) ? v.filter((e) => typeof e === "string" || typeof e === "number" || typeof e === "boolean").map(String) : NO_ELEMENTS;
}

/** The claim at `path` (names into nested objects), read as the token's own members only, so no inherited name is found. */
export function claimAt(claims: Readonly<Record<string, unknown>>, path: readonly string[]): unknown {
  let v: unknown = claims;
  for (const key of path) {
    if (v === null || typeof v !== "object" || Array.isArray(v) || !Object.hasOwn(v, key)) return undefined;
    v = (v as Record<string, unknown>)[key];
  }
  return v;
}
