/**
 * The length of each message of a gRPC stream, read as its bytes pass: a message is a
 * 1-byte flag, a 4-byte big-endian length, then that many bytes. A gRPC call is not held
 * to a total body size (a client-streaming call may run for hours), so each of its
 * messages is held to the limit instead, before any byte of one too long goes on.
 */
const PREFIX_BYTES = 5;

export class GrpcMessageLimit {
  private readonly prefix = Buffer.alloc(PREFIX_BYTES);
  private prefixHave = 0;
  /** Bytes of the current message still to come. */
  private left = 0;

  constructor(private readonly maxBytes: number) {}

  /** False when a message that `chunk` begins declares more than the limit. */
  accepts(chunk: Uint8Array): boolean {
    let i = 0;
    while (i < chunk.byteLength) {
      if (this.left > 0) {
        const n = Math.min(this.left, chunk.byteLength - i);
        this.left -= n;
        i += n;
        continue;
      }
      this.prefix[this.prefixHave++] = chunk[i++]!;
      if (this.prefixHave < PREFIX_BYTES) continue;
      this.prefixHave = 0;
      this.left = this.prefix.readUInt32BE(1);
      if (this.left > this.maxBytes) return false;
    }
    return true;
  }
}
