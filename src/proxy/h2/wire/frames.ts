/**
 * HTTP/2's frame layer (RFC 9113 §4, §6): the numbers the protocol names, and the output
 * that a session's frames are written into during one turn of the event loop and sent
 * together at its end, so a wave of streams leaves in one socket write.
 */

export const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");
export const FRAME_HEADER_BYTES = 9;

export const enum FrameType {
  DATA = 0,
  HEADERS = 1,
  PRIORITY = 2,
  RST_STREAM = 3,
  SETTINGS = 4,
  PUSH_PROMISE = 5,
  PING = 6,
  GOAWAY = 7,
  WINDOW_UPDATE = 8,
  CONTINUATION = 9,
}

export const enum Flag {
  END_STREAM = 0x1,
  ACK = 0x1,
  END_HEADERS = 0x4,
  PADDED = 0x8,
  PRIORITY = 0x20,
}

export const enum ErrorCode {
  NO_ERROR = 0x0,
  PROTOCOL_ERROR = 0x1,
  INTERNAL_ERROR = 0x2,
  FLOW_CONTROL_ERROR = 0x3,
  STREAM_CLOSED = 0x5,
  FRAME_SIZE_ERROR = 0x6,
  REFUSED_STREAM = 0x7,
  CANCEL = 0x8,
  COMPRESSION_ERROR = 0x9,
  ENHANCE_YOUR_CALM = 0xb,
}

export const enum Setting {
  HEADER_TABLE_SIZE = 0x1,
  ENABLE_PUSH = 0x2,
  MAX_CONCURRENT_STREAMS = 0x3,
  INITIAL_WINDOW_SIZE = 0x4,
  MAX_FRAME_SIZE = 0x5,
  MAX_HEADER_LIST_SIZE = 0x6,
}

/** The flow-control window every stream and the connection start with (RFC 9113 §6.9.2). */
export const DEFAULT_WINDOW = 65_535;
export const MAX_WINDOW = 0x7fff_ffff;
/** The largest frame payload a peer may send before it learns otherwise (SETTINGS_MAX_FRAME_SIZE's floor). */
export const DEFAULT_MAX_FRAME = 16_384;
export const MAX_FRAME_CEILING = 16_777_215;

/** Frames written during one turn, in order; `take()` hands them over and starts afresh. */
export class FrameOutput {
  private buf = Buffer.allocUnsafe(16_384);
  length = 0;

  private room(n: number): void {
    if (this.length + n <= this.buf.byteLength) return;
    const grown = Buffer.allocUnsafe(Math.max(this.buf.byteLength * 2, this.length + n));
    this.buf.copy(grown, 0, 0, this.length);
    this.buf = grown;
  }

  /** A frame's 9-byte header; its payload follows with the calls below. */
  header(payloadLength: number, type: FrameType, flags: number, stream: number): void {
    this.room(FRAME_HEADER_BYTES + payloadLength);
    const b = this.buf;
    let at = this.length;
    b[at++] = payloadLength >>> 16;
    b[at++] = (payloadLength >>> 8) & 0xff;
    b[at++] = payloadLength & 0xff;
    b[at++] = type;
    b[at++] = flags;
    b.writeUInt32BE(stream, at);
    this.length = at + 4;
  }

  bytes(src: Uint8Array, start: number, end: number): void {
    this.room(end - start);
    this.buf.set(start === 0 && end === src.byteLength ? src : src.subarray(start, end), this.length);
    this.length += end - start;
  }

  u32(value: number): void {
    this.room(4);
    this.buf.writeUInt32BE(value >>> 0, this.length);
    this.length += 4;
  }

  u16(value: number): void {
    this.room(2);
    this.buf.writeUInt16BE(value, this.length);
    this.length += 2;
  }

  /** The bytes written, valid until the next write here: the socket copies what it does not take. */
  get written(): Buffer {
    return this.buf;
  }

  clear(): void {
    this.length = 0;
    // A burst's large buffer is not kept for ever.
    if (this.buf.byteLength > 1 << 20) this.buf = Buffer.allocUnsafe(16_384);
  }
}
