/**
 * Header hygiene for HTTP/2 streams, as headers.ts does it for HTTP/1.1: what a stream's
 * headers are to policies, logs and spans (fields, as the raw parser gives them), and
 * what is forwarded. Connection-specific fields are not allowed in HTTP/2 (RFC 9113
 * §8.2.2) and identity headers are set only by the proxy, so both are left off, in
 * every CGI spelling; `te` goes on only as "trailers", which gRPC sends.
 */
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from "node:http2";
import { inCgiList } from "../../core/cgi-name.ts";
import { HOP_BY_HOP_HEADERS, IDENTITY_HEADERS, MESH_ANSWER_HEADERS } from "../../core/header-names.ts";
import type { LoggedHead } from "../access-log.ts";
// :authority is held to what the HTTP/1.1 parser takes in Host.
import { HOST } from "../transport/h1/request-parse.ts";
import { editH2Headers, type HeaderEdits } from "../header-edits.ts";

const NOT_FORWARDED = [...HOP_BY_HOP_HEADERS, ...IDENTITY_HEADERS];
/** From anything but a sidecar, a sidecar's answer headers are not forwarded either. */
const NOT_FORWARDED_NOT_FROM_PROXY = [...NOT_FORWARDED, ...MESH_ANSWER_HEADERS];

/** A stream's request as the access log, spans and policies read one: `fields` without pseudo-headers, `host` from :authority. */
export function streamHead(headers: IncomingHttpHeaders): LoggedHead & { fields: string[] } {
  const fields: string[] = [];
  for (const name in headers) {
    if (name.charCodeAt(0) === 58 /* ":" */) continue;
    const value = headers[name];
    if (Array.isArray(value)) for (const v of value) fields.push(name, v);
    else if (value !== undefined) fields.push(name, String(value));
  }
  const authority = headers[":authority"] ?? headers.host ?? "";
  if (headers.host === undefined && authority !== "") fields.push("host", authority);
  return { method: headers[":method"] ?? "", pathAndQuery: headers[":path"] ?? "", host: authority, fields };
}

/** The request headers to send on: pseudo-headers kept, `drop` (names in cgiName form) and the proxy's own left off, then `add` set. */
export function forwardedRequest(headers: IncomingHttpHeaders, drop: readonly string[], add: Record<string, string>): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  for (const name in headers) {
    // Pseudo-headers go on as they are: never the proxy's own, nor a route's to drop.
    if (name.charCodeAt(0) === 58 /* ":" */) {
      out[name] = headers[name];
      continue;
    }
    if (name === "te") {
      if (String(headers.te).trim().toLowerCase() === "trailers") out.te = "trailers";
      continue;
    }
    if (inCgiList(NOT_FORWARDED, name) || (drop.length > 0 && inCgiList(drop, name))) continue;
    out[name] = headers[name];
  }
  for (const name in add) out[name] = add[name];
  return out;
}

/**
 * Response headers or trailers to send on: connection-specific and identity fields left
 * off, and a route's `edits` made. `fromProxy`: the upstream is a sidecar, whose own
 * answers (x-mesh-error) go on unedited; from anything else, those headers are left off.
 */
export function forwardedResponse(headers: IncomingHttpHeaders, fromProxy: boolean, routeEdits?: HeaderEdits): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  const edits = routeEdits === undefined || (fromProxy && headers["x-mesh-error"] !== undefined) ? undefined : routeEdits;
  const drop = edits?.drop;
  const notForwarded = fromProxy ? NOT_FORWARDED : NOT_FORWARDED_NOT_FROM_PROXY;
  for (const name in headers)
    if (name.charCodeAt(0) === 58 /* ":" */ || (!inCgiList(notForwarded, name) && (drop === undefined || !inCgiList(drop, name)))) out[name] = headers[name];
  if (edits !== undefined) editH2Headers(out, edits);
  return out;
}

/** application/grpc, alone or with a subtype (+proto, +json) or parameters: not a type that merely starts so. */
const GRPC_TYPE = /^application\/grpc(?:[+;]|$)/i;

/** gRPC calls are answered with a gRPC status, not an HTTP one (local-reply.ts), and their messages are held to the body limit one by one. */
export function isGrpc(headers: IncomingHttpHeaders): boolean {
  return GRPC_TYPE.test(headers["content-type"] ?? "");
}

/**
 * Why a stream's request is refused before anything else looks at it, as an HTTP/1.1
 * request would be: a label for mesh_requests_refused_total and a detail; undefined when
 * it may go on. The server session has refused what HTTP/2 itself forbids (RFC 9113 §8.2,
 * wire/fields.ts), a :path outside visible ASCII included; what is left is what HTTP/1.1
 * refuses beyond it: a fragment (RFC 9110 §7.1: never sent, so a sign of trouble), and *
 * but for OPTIONS.
 */
export function streamProblem(headers: IncomingHttpHeaders): { reason: string; detail: string } | undefined {
  if (headers[":method"] === "CONNECT") return { reason: "target", detail: "HTTP/2 CONNECT is not carried" };
  const path = headers[":path"] ?? "";
  if (path.includes("#") || (path === "*" && headers[":method"] !== "OPTIONS"))
    return { reason: "target", detail: "the :path must be a path of visible ASCII without a fragment, or * for OPTIONS" };
  const authority = headers[":authority"];
  if (authority !== undefined && !HOST.test(authority)) return { reason: "host", detail: "invalid :authority" };
  // Without :authority, a host field names the service (RFC 9113 §8.3.1): held to the same rule.
  const host = headers.host;
  if (authority === undefined && host !== undefined && !HOST.test(host)) return { reason: "host", detail: "invalid host" };
  // RFC 9113 §8.3.1: a Host that names another authority than :authority is malformed.
  if (host !== undefined && authority !== undefined && host.toLowerCase() !== authority.toLowerCase()) return { reason: "host", detail: "host and :authority differ" };
  return undefined;
}
