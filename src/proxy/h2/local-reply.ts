/**
 * The proxy's own answers on an HTTP/2 stream (a refusal, no route, a failed upstream).
 * A gRPC client reads only grpc-status, so a gRPC call gets HTTP 200 with the status that
 * gRPC's HTTP mapping gives the proxy's status (as Envoy answers), in one HEADERS frame
 * that ends the stream ("trailers-only"); x-mesh-error names the cause either way.
 */
import type { ErrorParts } from "../errors.ts";
import type { H2ServerStream } from "./wire/server-stream.ts";

/**
 * gRPC status codes by HTTP status (grpc/doc/http-grpc-status-mapping.md); anything else
 * is UNKNOWN (2). 413, a message over the proxy's limit, is RESOURCE_EXHAUSTED (8), which
 * gRPC libraries give a message over their own.
 */
const GRPC_STATUS: Record<number, number> = { 400: 13, 401: 16, 403: 7, 404: 12, 413: 8, 429: 14, 502: 14, 503: 14, 504: 14 };
const UNKNOWN = 2;

export function grpcStatusOf(httpStatus: number): number {
  return GRPC_STATUS[httpStatus] ?? UNKNOWN;
}

/** grpc-message is percent-encoded outside printable ASCII, and at "%" (the gRPC wire spec). */
function grpcMessage(text: string): string {
  return text.trim().replace(/[^\x20-\x24\x26-\x7e]/gu, (c) => encodeURIComponent(c));
}

/** Answers `stream` with `e` (a gRPC call with `grpcStatus`, by default the one e's status maps to), unless it was answered or closed already; the status recorded is returned. */
export function replyLocally(stream: H2ServerStream, e: ErrorParts, grpc: boolean, grpcStatus = grpcStatusOf(e.status)): number {
  if (stream.headersSent || stream.closed) return e.status;
  const headers: Record<string, string> = {};
  for (const name in e.headers) if (name !== "connection") headers[name] = e.headers[name]!;
  // A client still sending its request is then told to stop, without error (RFC 9113 §8.1: wire/server-stream.ts).
  if (grpc) {
    stream.respond({ ":status": 200, "content-type": "application/grpc", "grpc-status": String(grpcStatus), "grpc-message": grpcMessage(e.body), "x-mesh-error": headers["x-mesh-error"]!, ...(headers["x-mesh-overflow"] && { "x-mesh-overflow": headers["x-mesh-overflow"] }), ...(headers["retry-after"] && { "retry-after": headers["retry-after"] }) }, true);
  } else {
    stream.respond({ ":status": e.status, ...headers });
    stream.write(Buffer.from(e.body));
    stream.end();
  }
  return e.status;
}
