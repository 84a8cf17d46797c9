/**
 * The connections to the local service: the same strict HTTP/1.1 client as the outbound
 * side, so a response with ambiguous framing or stray bytes is refused and its
 * connection never reused.
 */
import { Http1Pool } from "./transport/h1/index.ts";

/** The local service is on this host: a connect that takes this long is not coming. */
export const LOCAL_CONNECT_TIMEOUT_MS = 2_000;
/** Below Bun.serve's default 10 s and most servers' keep-alive timeouts. */
const LOCAL_IDLE_TIMEOUT_MS = 4_000;

/** The local service's host, as a socket connects to it (an IPv6 address without its brackets). */
export function upstreamHost(upstream: URL): string {
  return upstream.hostname.replace(/^\[|\]$/g, "");
}

/** The local service's HTTP port: --upstream is an http:// URL, 80 when it names none. */
export function upstreamPort(upstream: URL): number {
  return Number(upstream.port || 80);
}

export function localServicePool(upstream: URL): Http1Pool {
  return new Http1Pool({
    host: upstreamHost(upstream),
    port: upstreamPort(upstream),
    connectTimeoutMs: LOCAL_CONNECT_TIMEOUT_MS,
    idleTimeoutMs: LOCAL_IDLE_TIMEOUT_MS,
  });
}
