/**
 * The last check before a request is forwarded: what Bun.serve's HTTP/1 parser lets
 * through but a proxy must not pass on. Bun itself already answers 400/431/505 and
 * closes the connection for CL+TE, conflicting or malformed Content-Length, disguised
 * or repeated Transfer-Encoding, TE on HTTP/1.0, obs-fold, bare CR/LF, bad chunks,
 * most control characters and bad header names (test/proxy/framing.test.ts proves
 * each). What reaches a handler and is refused here:
 *
 * - CONNECT, and any target that is not origin- or absolute-form: Bun hands the raw
 *   target through as `req.url` (`x:@host:port/p`), and gluing its "path" to an
 *   upstream origin sends the request to a host of the client's choosing.
 * - No Host, or one that is not a plain host[:port]: a repeated Host arrives merged
 *   (`a, b`), and an empty or odd one leaves `req.url` relative.
 * - A merged repeated Content-Length (`4, 4`): fetch refuses it after the upstream
 *   was chosen, which would count as that upstream's failure.
 * - A body on GET or HEAD: Bun discards it silently, and bytes pipelined behind it
 *   are then parsed unpredictably. Forwarding the request without it changes it.
 * - `Upgrade: h2c` / `HTTP2-Settings`: a proxy that passed them on could end up
 *   tunnelling HTTP/2 past every per-request check (h2c smuggling).
 * - DEL in a header value: Bun refuses the other control characters but keeps 0x7F.
 */
import { errorResponse } from "./errors.ts";

export interface Refusal {
  /** A short, fixed label for metrics. */
  reason: "target" | "host" | "content-length" | "transfer-encoding" | "body-on-get" | "h2c" | "header-value";
  detail: string;
}

/** reg-name limited to what DNS and service names use, or an IP literal; optional port. */
const HOST = /^(?:[A-Za-z0-9._~-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$/;
/** Control characters other than HTAB (RFC 9110 §5.5). */
const CTL = /[\x00-\x08\x0a-\x1f\x7f]/;

/** Undefined if `req` may be forwarded; otherwise why not. */
export function requestProblem(req: Request): Refusal | undefined {
  if (req.method === "CONNECT") return { reason: "target", detail: "CONNECT is not proxied" };
  // Bun builds req.url as "http://" + Host + target for origin-form targets only.
  if (!req.url.startsWith("http://") && !req.url.startsWith("https://"))
    return { reason: "target", detail: "the request target must be a path or an absolute http URL, with a valid Host" };
  const h = req.headers;
  const host = h.get("host");
  if (host === null) return { reason: "host", detail: "no Host header" };
  if (!HOST.test(host)) return { reason: "host", detail: host.includes(",") ? "more than one Host header" : "invalid Host header" };
  const cl = h.get("content-length");
  if (cl !== null && !/^\d{1,16}$/.test(cl)) return { reason: "content-length", detail: "more than one Content-Length" };
  const te = h.get("transfer-encoding");
  if (te !== null && (cl !== null || te.toLowerCase() !== "chunked"))
    return { reason: "transfer-encoding", detail: "Transfer-Encoding other than a single chunked, or with Content-Length" };
  if ((req.method === "GET" || req.method === "HEAD") && (te !== null || (cl !== null && Number(cl) > 0)))
    return { reason: "body-on-get", detail: `a ${req.method} request with a body is not forwarded` };
  if (h.has("http2-settings") || /(^|[\s,])h2c($|[\s,])/i.test(h.get("upgrade") ?? ""))
    return { reason: "h2c", detail: "upgrade to h2c is not supported" };
  for (const [name, value] of h) if (CTL.test(value)) return { reason: "header-value", detail: `control character in the value of ${name}` };
  return undefined;
}

/** The answer to a refused request: 400, and the connection is closed after it. */
export function refusalResponse(r: Refusal): Response {
  return errorResponse("bad-request", r.detail, { connection: "close" });
}
