/**
 * An HTTPRoute rule's header changes (`requestHeaders`, `responseHeaders`), compiled once
 * per config: the names a message loses (those set and those removed, in every spelling,
 * core/cgi-name.ts) and what it gains, as HTTP/1.1 lines and as HTTP/2 values. A
 * request's change adds what its relay needs (request-header-change.ts); a response's is
 * this alone (relay-head.ts writes its lines before the proxy's own framing lines).
 */
import type { OutgoingHttpHeaders } from "node:http2";

/** A RequestHeaderModifier or ResponseHeaderModifier, as validated (names in cgiName form). */
interface HeaderModifier {
  set?: readonly { name: string; value: string }[];
  add?: readonly { name: string; value: string }[];
  remove?: readonly string[];
}

export interface HeaderEdits {
  /** Names in cgiName form whose values the message loses. */
  drop: readonly string[];
  /** HTTP/1.1: the lines set and added, each ending in CRLF. */
  text: string;
  set: readonly (readonly [string, string])[];
  add: readonly (readonly [string, string])[];
}

export function compileHeaderEdits(m: HeaderModifier): HeaderEdits {
  const set = (m.set ?? []).map((h) => [h.name, h.value] as const);
  const add = (m.add ?? []).map((h) => [h.name, h.value] as const);
  return {
    drop: [...set.map(([name]) => name), ...(m.remove ?? [])],
    text: [...set, ...add].map(([name, value]) => `${name}: ${value}\r\n`).join(""),
    set,
    add,
  };
}

/** HTTP/2: `out` (forwarded with `edits.drop` dropped already) gets the values set and added. */
export function editH2Headers(out: OutgoingHttpHeaders, edits: HeaderEdits): void {
  for (const [name, value] of edits.set) out[name] = value;
  for (const [name, value] of edits.add) {
    const had = out[name];
    out[name] = had === undefined ? value : [...(Array.isArray(had) ? had : [String(had)]), value];
  }
}
