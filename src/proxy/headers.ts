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

/** RELAY_SKIP and traceparent, which a tracing sidecar replaces with its own span's. */
export const RELAY_SKIP_TRACED: ReadonlySet<string> = new Set([...RELAY_SKIP, "traceparent"]);

/** Response fields never relayed: hop-by-hop, identity, and the framing this proxy sets itself (relay-head.ts). */
export const RESPONSE_SKIP: ReadonlySet<string> = new Set([...HOP_BY_HOP, ...IDENTITY, "content-length"]);

/** RESPONSE_SKIP and the headers of a sidecar's own answers, for a response from anything but a sidecar. */
export const RESPONSE_SKIP_NOT_FROM_PROXY: ReadonlySet<string> = new Set([...RESPONSE_SKIP, ...MESH_ANSWER_HEADERS]);
