/**
 * Header hygiene at the trust boundary. Hop-by-hop headers are per connection and never
 * forwarded (RFC 9110 §7.6.1), including any a client lists in `Connection` — which is
 * also how a client would try to make a proxy drop a header it adds. Identity headers
 * are only ever set by the proxy, so any copy a client sends is removed first, under the
 * name with "_" for "-" too.
 */
import { inCgiList } from "../core/cgi-name.ts";

export const CLIENT_ID_HEADER = "x-mesh-client-id";
/** Names a tunnel to the inbound's loopback server, which reads the caller's identity by it (loopback-tunnel.ts). */
export const TUNNEL_HEADER = "x-mesh-tunnel";

// http2-settings belongs to an h2c upgrade of one connection (RFC 7540 §3.2.1); the request guard refuses it first.
const HOP_BY_HOP = ["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "http2-settings", "proxy-authenticate", "proxy-authorization"];
const IDENTITY = [CLIENT_ID_HEADER, "x-forwarded-client-cert", "l5d-client-id", TUNNEL_HEADER];

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
