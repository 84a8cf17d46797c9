/**
 * An HTTPRoute rule's `requestHeaders`, compiled once per config into what each protocol's
 * relay needs: for HTTP/1.1 the fields to drop and the lines to add (request-head.ts keeps
 * a head as received when nothing it carries is dropped); for HTTP/2 and WebSocket upgrades
 * the names to drop and the values to set and add. Removal matches every spelling of a
 * name ("x_tenant" for "x-tenant", core/cgi-name.ts), as the proxy's own removals do.
 */
import type { z } from "zod";
import type { OutgoingHttpHeaders } from "node:http2";
import type { HeaderModifier } from "../config/kinds/http-route.ts";
import { inCgiList } from "../core/cgi-name.ts";
import { RELAY_SKIP, RELAY_SKIP_TRACED } from "./headers.ts";
import { addedLines, type AddedLines } from "./transport/h1/request-head.ts";

export interface RequestHeaderChange {
  /** HTTP/1.1: the relay's own skip set with the names set or removed, without and with a span's traceparent. */
  skip: ReadonlySet<string>;
  skipTraced: ReadonlySet<string>;
  /** HTTP/1.1: the lines set and added. */
  lines: AddedLines;
  /** Names whose values the request loses: those set and those removed. */
  drop: readonly string[];
  set: readonly (readonly [string, string])[];
  add: readonly (readonly [string, string])[];
}

export function compileHeaderChange(m: z.output<typeof HeaderModifier>): RequestHeaderChange {
  const set = (m.set ?? []).map((h) => [h.name, h.value] as const);
  const add = (m.add ?? []).map((h) => [h.name, h.value] as const);
  const drop = [...set.map(([name]) => name), ...(m.remove ?? [])];
  return {
    skip: new Set([...RELAY_SKIP, ...drop]),
    skipTraced: new Set([...RELAY_SKIP_TRACED, ...drop]),
    lines: addedLines([...set, ...add].map(([name, value]) => `${name}: ${value}\r\n`).join("")),
    drop,
    set,
    add,
  };
}

/** HTTP/2: `out` (forwarded with `change.drop` dropped already) gets the values set and added. */
export function changeH2Headers(out: OutgoingHttpHeaders, change: RequestHeaderChange): void {
  for (const [name, value] of change.set) out[name] = value;
  for (const [name, value] of change.add) {
    const had = out[name];
    out[name] = had === undefined ? value : [...(Array.isArray(had) ? had : [String(had)]), value];
  }
}

/** A WebSocket upgrade's headers, changed in place. */
export function changeHeaders(headers: Headers, change: RequestHeaderChange): void {
  const names = [...headers.keys()];
  for (const name of names) if (inCgiList(change.drop, name)) headers.delete(name);
  for (const [name, value] of change.set) headers.set(name, value);
  for (const [name, value] of change.add) headers.append(name, value);
}
