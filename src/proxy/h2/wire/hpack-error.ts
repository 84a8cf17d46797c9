/** A malformed header block (RFC 7541): a COMPRESSION_ERROR for the whole connection. */
export class HpackError extends Error {
  override readonly name = "HpackError";
}
