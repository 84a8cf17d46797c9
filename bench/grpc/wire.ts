/**
 * The gRPC wire shapes the bench sends and answers, shared by the service, the request
 * body file h2load posts and the readiness check: a gRPC message is a 5-byte prefix
 * (compressed flag, big-endian length) and the message bytes (gRPC over HTTP/2,
 * "Length-Prefixed-Message").
 */

/** The service's answer: one message of this many bytes, as the HTTP/1.1 bench's body is 100 bytes. */
export const RESPONSE_MESSAGE_BYTES = 100;
/** The request h2load sends: a small unary call's message. */
export const REQUEST_MESSAGE_BYTES = 100;
export const PREFIX_BYTES = 5;
/** The service every call names (`:authority`), as the HTTP/1.1 bench's `Host`. */
export const AUTHORITY = "payments";
/** A method path of the shape gRPC uses: /package.Service/Method. */
export const METHOD_PATH = "/bench.Payments/Charge";

/** One uncompressed length-prefixed message of `bytes` bytes of `fill`. */
export function grpcMessage(bytes: number, fill: string): Buffer {
  const out = Buffer.alloc(PREFIX_BYTES + bytes, fill);
  out[0] = 0;
  out.writeUInt32BE(bytes, 1);
  return out;
}

/**
 * The byte length of a request body that is exactly one well-formed uncompressed
 * message, or a reason it is not one: the service refuses malformed bodies with HTTP
 * 400, which h2load counts, so a proxy that mangled a body cannot pass as a success.
 */
export function checkOneMessage(body: Buffer): number | string {
  if (body.byteLength < PREFIX_BYTES) return `body of ${body.byteLength} bytes, shorter than a message prefix`;
  if (body[0] !== 0) return `compressed flag ${body[0]}, expected 0`;
  const length = body.readUInt32BE(1);
  if (length !== body.byteLength - PREFIX_BYTES) return `prefix says ${length} bytes, body carries ${body.byteLength - PREFIX_BYTES}`;
  return length;
}
