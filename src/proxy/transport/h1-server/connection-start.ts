/**
 * What a connection may open with besides HTTP/1.1 requests: the HTTP/2 preface (the
 * connection is handed on whole, ../../h2), or, on the outbound, CONNECT.
 *
 * HTTP CONNECT as an HTTP proxy's clients send it before anything else on a connection
 * (grpc-js and gRPC's C core with `http_proxy` set, as `mesh run` sets it; undici's
 * ProxyAgent for every call): `CONNECT payments:80 HTTP/1.1`, its header lines, an empty
 * line. The strict parser reads it like any head (request-parse.ts: authority-form target,
 * no content). The outbound listener answers 200 and reads what follows as a new
 * connection of the service's (HTTP/1.1 or the HTTP/2 preface), routed by each request's
 * own Host or :authority like any other call; it never opens a TCP connection to the
 * target, so it is no open proxy. Its header lines (Proxy-Authorization, Host) go no
 * further.
 */

export const CONNECT_ESTABLISHED = "HTTP/1.1 200 Connection established\r\n\r\n";

/** A TLS record's first byte: a client that starts TLS inside the tunnel wants what the sidecar cannot give (its own TLS to the service). */
export const TLS_HANDSHAKE_BYTE = 0x16;

/** The HTTP/2 preface's first line and the empty one after it (RFC 9113 §3.4): what ends a "head" here. */
const H2_PREFACE_HEAD = Buffer.from("PRI * HTTP/2.0\r\n\r\n", "latin1");

export function startsWithH2Preface(buf: Buffer, from: number): boolean {
  return buf.byteLength - from >= H2_PREFACE_HEAD.byteLength && buf.compare(H2_PREFACE_HEAD, 0, H2_PREFACE_HEAD.byteLength, from, from + H2_PREFACE_HEAD.byteLength) === 0;
}
