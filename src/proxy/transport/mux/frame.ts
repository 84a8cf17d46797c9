/**
 * mesh-mux/1: many HTTP/1.1 connections as streams of one mutual-TLS connection between
 * two mesh proxies, chosen by ALPN, so a wave of requests crosses the pair in one TLS
 * record and one send instead of one per request.
 *
 * Every frame is a 10-byte header, then for DATA its payload:
 *
 *   type u8 | flags u8 (0) | stream id u32 | value u32       (big-endian)
 *
 *   DATA    value = payload length (1..MAX_FRAME_PAYLOAD); the first DATA on a new id opens it
 *   WINDOW  value = bytes the receiver took since its last WINDOW (per-stream flow control)
 *   FIN     the sender closed the stream gracefully; value 0
 *   RESET   the sender dropped the stream; value = ResetCode
 *   GOAWAY  stream id 0; value = the last stream the server accepted: it takes no more
 *
 * Only the client (the outbound proxy) opens streams, with ids that only grow. A stream
 * carries one HTTP/1.1 connection's bytes verbatim, so both ends keep their strict
 * HTTP/1.1 code; the session adds no meaning of its own to them.
 */

export const MUX_ALPN = "mesh-mux/1";
export const HEADER_BYTES = 10;
export const MAX_FRAME_PAYLOAD = 64 * 1024;
/** Bytes a stream may send before the receiver credits them back. */
export const STREAM_WINDOW = 128 * 1024;
/** Streams one session carries at once: with the window, bounds what a peer can make us buffer. */
export const MAX_STREAMS = 128;
export const MAX_WINDOW = 2 ** 31 - 1;

export const DATA = 0;
export const WINDOW = 1;
export const FIN = 2;
export const RESET = 3;
export const GOAWAY = 4;

/** RESET values. */
export const RESET_CANCEL = 0;
/** The server took nothing of the stream: safe to send again elsewhere. */
export const RESET_REFUSED = 1;

/** TLS ALPN wire format: each protocol name prefixed by its length. */
export function alpnWire(protocols: readonly string[]): Buffer {
  return Buffer.concat(protocols.map((p) => Buffer.concat([Buffer.from([p.length]), Buffer.from(p, "latin1")])));
}

/** The peer broke the protocol: the whole session is torn down. */
export class MuxProtocolError extends Error {
  override readonly name = "MuxProtocolError";
}

/** The server refused a stream before reading any of it (it is draining, or full). */
export class StreamRefusedError extends Error {
  override readonly name = "StreamRefusedError";
}
