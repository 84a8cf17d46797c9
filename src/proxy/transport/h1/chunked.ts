/**
 * Incremental, strict decoder for `Transfer-Encoding: chunked` (RFC 9112 §7.1).
 * Data is handed out as zero-copy views of the input. Refused: a size that is not
 * 1*HEXDIG or exceeds 2^53, whitespace other than before a chunk extension, control
 * bytes in an extension, a chunk not followed by CRLF, bare LF/CR, a size line or
 * trailer section over the limits. Trailers are validated and dropped (nothing
 * downstream can carry them).
 */
import { ProtocolError } from "./errors.ts";
import { MAX_HEAD_BYTES, TCHAR, VALUE_BYTE } from "./response-head.ts";

const CR = 13;
const LF = 10;
const SP = 32;
const HT = 9;
/** Longest size line, chunk extensions included. */
const MAX_SIZE_LINE = 4096;
/** 13 hex digits = 2^52: larger chunks are not plausible and would lose precision. */
const MAX_SIZE_DIGITS = 13;

const enum S {
  Size, // reading hex digits
  SizeWs, // BWS after the digits, before ';'
  Ext, // inside chunk extensions, up to CR
  SizeLf, // expecting LF after the size line's CR
  Data,
  DataCr,
  DataLf,
  TrailerStart, // at the start of a trailer line (or the final CRLF)
  Trailer, // inside a trailer line
  TrailerLf, // expecting LF after a trailer line's CR
  FinalLf, // expecting the LF that ends the message
  Done,
}

const HEX = new Int8Array(256).fill(-1);
for (let i = 0; i < 10; i++) HEX[48 + i] = i;
for (let i = 0; i < 6; i++) {
  HEX[65 + i] = 10 + i;
  HEX[97 + i] = 10 + i;
}

export class ChunkedDecoder {
  private state = S.Size;
  private size = 0;
  private digits = 0;
  private lineBytes = 0;
  private trailerBytes = 0;
  /** Trailer line: still in the name part (before ':'). */
  private inName = true;
  private nameLen = 0;

  get done(): boolean {
    return this.state === S.Done;
  }

  /**
   * Decodes `buf`, calling `emit` with each piece of body data. Returns how many bytes
   * of `buf` belong to this body: less than buf.length only once done (the rest is
   * whatever the upstream sent after the message).
   */
  push(buf: Uint8Array, emit: (data: Uint8Array) => void): number {
    let i = 0;
    const n = buf.length;
    while (i < n) {
      switch (this.state) {
        case S.Data: {
          const take = Math.min(this.size, n - i);
          emit(buf.subarray(i, i + take));
          i += take;
          this.size -= take;
          if (this.size === 0) this.state = S.DataCr;
          continue;
        }
        case S.Size: {
          const b = buf[i]!;
          const h = HEX[b]!;
          if (h >= 0) {
            if (++this.digits > MAX_SIZE_DIGITS) throw new ProtocolError("chunk size too large");
            this.size = this.size * 16 + h;
          } else if (this.digits === 0) {
            throw new ProtocolError("invalid chunk size");
          } else if (b === CR) {
            this.state = S.SizeLf;
          } else if (b === 59 /* ; */) {
            this.state = S.Ext;
          } else if (b === SP || b === HT) {
            this.state = S.SizeWs;
          } else {
            throw new ProtocolError("invalid chunk size");
          }
          break;
        }
        case S.SizeWs: {
          const b = buf[i]!;
          if (b === 59 /* ; */) this.state = S.Ext;
          else if (b !== SP && b !== HT) throw new ProtocolError("whitespace after a chunk size");
          break;
        }
        case S.Ext: {
          const b = buf[i]!;
          if (b === CR) this.state = S.SizeLf;
          else if (VALUE_BYTE[b] !== 1) throw new ProtocolError("invalid byte in a chunk extension");
          break;
        }
        case S.SizeLf: {
          if (buf[i] !== LF) throw new ProtocolError("bare CR in a chunk size line");
          this.lineBytes = 0;
          this.digits = 0;
          this.state = this.size === 0 ? S.TrailerStart : S.Data;
          break;
        }
        case S.DataCr:
          if (buf[i] !== CR) throw new ProtocolError("chunk data not followed by CRLF");
          this.state = S.DataLf;
          break;
        case S.DataLf:
          if (buf[i] !== LF) throw new ProtocolError("chunk data not followed by CRLF");
          this.state = S.Size;
          break;
        case S.TrailerStart: {
          const b = buf[i]!;
          if (b === CR) {
            this.state = S.FinalLf;
          } else if (b === SP || b === HT) {
            throw new ProtocolError("obs-fold in the chunked trailer section");
          } else {
            this.state = S.Trailer;
            this.inName = true;
            this.nameLen = 0;
            continue; // re-read this byte as part of the line
          }
          break;
        }
        case S.Trailer: {
          const b = buf[i]!;
          if (this.inName) {
            if (b === 58 /* : */ && this.nameLen > 0) this.inName = false;
            else if (TCHAR[b] === 1) this.nameLen++;
            else throw new ProtocolError("invalid byte in a trailer field name");
          } else if (b === CR) {
            this.state = S.TrailerLf;
          } else if (VALUE_BYTE[b] !== 1) {
            throw new ProtocolError("invalid byte in a trailer field value");
          }
          break;
        }
        case S.TrailerLf:
          if (buf[i] !== LF) throw new ProtocolError("bare CR in the chunked trailer section");
          this.state = S.TrailerStart;
          break;
        case S.FinalLf:
          if (buf[i] !== LF) throw new ProtocolError("bare CR at the end of a chunked body");
          this.state = S.Done;
          return i + 1;
        case S.Done:
          return i;
      }
      // Every byte that is not chunk data counts against the line and trailer limits.
      if (this.state >= S.TrailerStart) {
        if (++this.trailerBytes > MAX_HEAD_BYTES) throw new ProtocolError("chunked trailer section too large");
      } else if (++this.lineBytes > MAX_SIZE_LINE) {
        throw new ProtocolError("chunk size line too long");
      }
      i++;
    }
    return this.state === S.Done ? i : n;
  }
}
