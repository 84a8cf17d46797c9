/**
 * Where a response body ends (RFC 9112 §6.3), and reading up to there: no body (HEAD,
 * 204, 304, Content-Length: 0), a Content-Length, chunked, or the close of the
 * connection (no framing at all; such a connection is never reused). Bytes beyond the
 * end are flagged, never passed on: they would be read as the start of the next response.
 */
import { ChunkedDecoder } from "./chunked.ts";
import type { ResponseHead } from "./response-head.ts";

export type FramingKind = "none" | "length" | "chunked" | "close";

/** Where body data goes: ranges of a read (piece), or whole views (emit, for decoded chunks). */
export interface BodyPieces {
  piece(buf: Uint8Array, start: number, end: number): void;
  readonly emit: (data: Uint8Array) => void;
}

/**
 * The framing of one response body and the reading of it. Set by frame() once the head
 * is in; a connection's Exchange is one (no second object per response).
 */
export class BodyFraming {
  kind: FramingKind = "none";
  /** The body is complete. */
  done = true;
  /** Bytes arrived after the end of the message. */
  extra = false;
  private remaining = 0;
  private decoder: ChunkedDecoder | undefined;

  /** Frames the response `res` to a request (`head`: it was a HEAD request), RFC 9112 §6.3. */
  frame(res: ResponseHead, head: boolean): this {
    if (head || res.status === 204 || res.status === 304 || (!res.chunked && res.contentLength === 0)) this.kind = "none";
    else if (res.chunked) this.kind = "chunked";
    else if (res.contentLength > 0) this.kind = "length";
    else this.kind = "close";
    this.remaining = this.kind === "length" ? res.contentLength : 0;
    this.done = this.kind === "none";
    this.extra = false;
    this.decoder = this.kind === "chunked" ? new ChunkedDecoder() : undefined;
    return this;
  }

  /**
   * Reads `chunk[start..end)`, handing body data to `out`; true once the body is
   * complete. Throws ProtocolError (chunked). Plain bodies go out as ranges of the
   * chunk: a view per piece would cost JSC an allocation.
   */
  feed(chunk: Uint8Array, start: number, end: number, out: BodyPieces): boolean {
    const n = end - start;
    if (this.done) {
      if (n > 0) this.extra = true;
      return true;
    }
    switch (this.kind) {
      case "length": {
        const take = Math.min(this.remaining, n);
        if (take > 0) out.piece(chunk, start, start + take);
        this.remaining -= take;
        if (this.remaining > 0) return false;
        if (take < n) this.extra = true;
        return (this.done = true);
      }
      case "chunked": {
        const used = this.decoder!.push(start === 0 && end === chunk.byteLength ? chunk : chunk.subarray(start, end), out.emit);
        if (!this.decoder!.done) return false;
        if (used < n) this.extra = true;
        return (this.done = true);
      }
      default: // "close": everything until the connection ends
        if (n > 0) out.piece(chunk, start, end);
        return false;
    }
  }

  /** Whether `bytes` more would complete a body that is not chunked (decoding is needed to tell for chunked). */
  completedBy(bytes: number): boolean {
    if (this.kind === "length") return bytes >= this.remaining;
    return this.done;
  }

  /** The connection ended cleanly (FIN): only a close-delimited body is then complete. */
  closed(): boolean {
    if (this.kind === "close") this.done = true;
    return this.done;
  }
}

/** The framing of the response to a request (`head`: it was a HEAD request). */
export function framingOf(res: ResponseHead, head: boolean): BodyFraming {
  return new BodyFraming().frame(res, head);
}
