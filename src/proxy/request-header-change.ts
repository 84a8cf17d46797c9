/**
 * An HTTPRoute rule's `requestHeaders` (header-edits.ts), with what each protocol's
 * request relay needs: for HTTP/1.1 the fields to drop and the lines to add
 * (request-head.ts keeps a head as received when nothing it carries is dropped); for
 * HTTP/2 and WebSocket upgrades the names to drop and the values to set and add.
 */
import type { z } from "zod";
import type { HeaderModifier } from "../config/kinds/http-route.ts";
import { inCgiList } from "../core/cgi-name.ts";
import { relaySkips, type RelaySkips } from "./headers.ts";
import { addedLines, type AddedLines } from "./transport/h1/request-head.ts";
import { compileHeaderEdits, type HeaderEdits } from "./header-edits.ts";

export interface RequestHeaderChange extends HeaderEdits {
  /** HTTP/1.1: the relay's own skip sets with the names set or removed. */
  skips: RelaySkips;
  /** HTTP/1.1: the lines set and added. */
  lines: AddedLines;
}

export function compileHeaderChange(m: z.output<typeof HeaderModifier>): RequestHeaderChange {
  const edits = compileHeaderEdits(m);
  return {
    ...edits,
    skips: relaySkips(edits.drop),
    lines: addedLines(edits.text),
  };
}

/** A WebSocket upgrade's headers, changed in place. */
export function changeHeaders(headers: Headers, change: RequestHeaderChange): void {
  const names = [...headers.keys()];
  for (const name of names) if (inCgiList(change.drop, name)) headers.delete(name);
  for (const [name, value] of change.set) headers.set(name, value);
  for (const [name, value] of change.add) headers.append(name, value);
}
