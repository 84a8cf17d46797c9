/**
 * Header hygiene at the trust boundary. Hop-by-hop headers are per connection and never
 * forwarded (RFC 9110 §7.6.1), including any a client lists in `Connection` — which is
 * also how a client would try to make a proxy drop a header it adds. Identity headers
 * are only ever set by the proxy, so any copy a client sends is removed first, under the
 * name with "_" for "-" too.
 */
import { inCgiList } from "../core/cgi-name.ts";
import { HOP_BY_HOP_HEADERS as HOP_BY_HOP, IDENTITY_HEADERS as IDENTITY, MESH_ANSWER_HEADERS } from "../core/header-names.ts";

export { CLIENT_ID_HEADER, TUNNEL_HEADER } from "../core/header-names.ts";

const NOT_FORWARDED = [...HOP_BY_HOP, ...IDENTITY];

/** Copies `source` without hop-by-hop or identity headers. */
export function forwardableHeaders(source: Headers): Headers {
  const out = new Headers(source);
  const listed = source.get("connection");
  if (listed) deleteNamed(out, listed.split(",").map((name) => name.trim().toLowerCase()));
  deleteNamed(out, NOT_FORWARDED);
  return out;
}

/** Deletes `names` from `headers`, in either spelling (core/cgi-name.ts). */
export function deleteNamed(headers: Headers, names: readonly string[]): void {
  for (const name of names) headers.delete(name);
  for (const name of [...headers.keys()]) if (inCgiList(names, name)) headers.delete(name);
}

/** Request fields never relayed from a raw downstream request: hop-by-hop, framing, identity, and Expect (answered here). */
export const RELAY_SKIP: ReadonlySet<string> = new Set([...HOP_BY_HOP, ...IDENTITY, "host", "content-length", "expect"]);

/**
 * What a request relay skips of a request's fields, and `extra` besides: with no span;
 * with a span that continues the caller's trace (its traceparent replaces the caller's);
 * with one that starts a new trace, where the caller's tracestate goes too (W3C Trace
 * Context: a tracestate without a valid traceparent is discarded, not handed on with
 * another trace).
 */
export interface RelaySkips {
  plain: ReadonlySet<string>;
  continued: ReadonlySet<string>;
  started: ReadonlySet<string>;
}

export function relaySkips(extra: readonly string[]): RelaySkips {
  return { plain: new Set([...RELAY_SKIP, ...extra]), continued: new Set([...RELAY_SKIP, "traceparent", ...extra]), started: new Set([...RELAY_SKIP, "traceparent", "tracestate", ...extra]) };
}

export const RELAY_SKIPS: RelaySkips = relaySkips([]);

/** A span, as far as what it hands on goes: whether it continues a caller's trace. */
type SpanKind = { parentId: string | undefined } | undefined;

export function skipFor(skips: RelaySkips, span: SpanKind): ReadonlySet<string> {
  return span === undefined ? skips.plain : span.parentId === undefined ? skips.started : skips.continued;
}

/** HTTP/2: the names an edit drops, and tracestate when the span starts a new trace (as `skipFor`). */
export function droppedFor(drop: readonly string[], span: SpanKind): readonly string[] {
  return span !== undefined && span.parentId === undefined ? [...drop, "tracestate"] : drop;
}

/** Response fields never relayed: hop-by-hop, identity, and the framing this proxy sets itself (relay-head.ts). */
export const RESPONSE_SKIP: ReadonlySet<string> = new Set([...HOP_BY_HOP, ...IDENTITY, "content-length"]);

/** RESPONSE_SKIP and the headers of a sidecar's own answers, for a response from anything but a sidecar. */
export const RESPONSE_SKIP_NOT_FROM_PROXY: ReadonlySet<string> = new Set([...RESPONSE_SKIP, ...MESH_ANSWER_HEADERS]);
