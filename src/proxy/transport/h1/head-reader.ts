/**
 * Assembles one response head from socket reads: skips interim (1xx) responses, and
 * returns the final head with the bytes that came after it. A head split over many
 * reads is gathered in a private buffer that doubles, so it is copied O(n), not O(n²).
 */
import { ProtocolError } from "./errors.ts";
import { findHeadEnd, parseResponseHead, parseWholeHead, type ResponseHead } from "./response-head.ts";

/** 1xx responses skipped before the final one. */
const MAX_INTERIM = 16;

export class HeadReader {
  private buf: Buffer | undefined;
  private len = 0;
  private interim = 0;

  /**
   * The final head once complete, undefined while more bytes are needed; throws
   * ProtocolError. What was read past it, the start of the body, is in the head's raw
   * buffer after its blank line (restOf).
   */
  feed(chunk: Buffer): ResponseHead | undefined {
    let buf = chunk;
    let scanFrom = 0;
    if (this.buf !== undefined) {
      scanFrom = this.len;
      buf = this.append(chunk);
    }
    let start = 0;
    for (;;) {
      // A head that came in one read is parsed in one pass; one split over reads is
      // gathered, its end found as bytes arrive, then parsed.
      let head = this.buf === undefined ? parseWholeHead(buf, start) : undefined;
      if (head === undefined) {
        const end = findHeadEnd(buf, start, Math.max(start, scanFrom));
        if (end < 0) {
          if (this.buf === undefined || start > 0) {
            const rest = buf.subarray(start);
            this.clearBuffer();
            this.append(rest);
          }
          return undefined;
        }
        head = parseResponseHead(buf, start, end);
      }
      start = restOf(head);
      if (head.status >= 200) {
        this.reset();
        return head;
      }
      if (head.status === 101) throw new ProtocolError("unexpected 101 Switching Protocols (no upgrade was requested)");
      if (head.status < 100) throw new ProtocolError(`invalid status ${head.status}`);
      if (++this.interim > MAX_INTERIM) throw new ProtocolError(`more than ${MAX_INTERIM} interim (1xx) responses`);
    }
  }

  /** Forgets everything: the next byte starts a new response. */
  reset(): void {
    this.clearBuffer();
    this.interim = 0;
  }

  private clearBuffer(): void {
    this.buf = undefined;
    this.len = 0;
  }

  private append(chunk: Uint8Array): Buffer {
    const need = this.len + chunk.byteLength;
    let buf = this.buf;
    if (buf === undefined || need > buf.length) {
      const next = Buffer.allocUnsafe(Math.max(need, buf ? buf.length * 2 : 4096));
      if (buf) next.set(buf.subarray(0, this.len));
      buf = next;
      this.buf = buf;
    }
    buf.set(chunk, this.len);
    this.len = need;
    return buf.subarray(0, need);
  }
}

/** Where the bytes read past a head start in its raw buffer (its length when none were). */
export function restOf(head: ResponseHead): number {
  return head.raw.fieldsEnd + 2;
}
