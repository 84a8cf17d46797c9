/**
 * HTTP CONNECT as an HTTP proxy's clients send it before anything else on a connection
 * (grpc-js and gRPC's C core with `http_proxy` set, as `mesh run` sets it; undici's
 * ProxyAgent for every call): `CONNECT payments:80 HTTP/1.1`, header lines, an empty line.
 * The outbound listener answers 200 and reads what follows as a new connection of the
 * service's (HTTP/1.1 or the HTTP/2 preface), routed by each request's own Host or
 * :authority like any other call; it never opens a TCP connection to the target, so it
 * is no open proxy. Header lines (Proxy-Authorization, Host) are read past, unused.
 */
import { RequestHeadError } from "../h1/request-parse.ts";

const PREFIX = Buffer.from("CONNECT ", "latin1");
/** host:port, the port required (RFC 9110 §9.3.6 authority-form). */
const AUTHORITY = /^(?:[A-Za-z0-9._~-]+|\[[0-9A-Fa-f:.]+\]):\d{1,5}$/;
const REQUEST_LINE = /^CONNECT (\S+) HTTP\/1\.[01]\r\n/;

/** The target of the CONNECT head at buf[from..end), or undefined when the head is not a CONNECT. */
export function connectTarget(buf: Buffer, from: number, end: number): string | undefined {
  if (buf.byteLength - from < PREFIX.byteLength || buf.compare(PREFIX, 0, PREFIX.byteLength, from, from + PREFIX.byteLength) !== 0) return undefined;
  const line = REQUEST_LINE.exec(buf.toString("latin1", from, Math.min(end, from + 300)));
  if (line === null) throw new RequestHeadError(400, "request-line", "malformed CONNECT request line");
  if (!AUTHORITY.test(line[1]!)) throw new RequestHeadError(400, "target", "a CONNECT target must be host:port");
  return line[1]!;
}

export const CONNECT_ESTABLISHED = "HTTP/1.1 200 Connection established\r\n\r\n";

/** A TLS record's first byte: a client that starts TLS inside the tunnel wants what the sidecar cannot give (its own TLS to the service). */
export const TLS_HANDSHAKE_BYTE = 0x16;
