/**
 * Finds where each HTTP/1.1 response ends in a byte stream, which is all a load
 * generator needs: status, framing (Content-Length or chunked) and whether the server
 * will close. Bodies are skipped, never stored.
 */
export interface ResponseEnd {
  status: number;
  close: boolean;
}

type State = "head" | "body" | "chunk-size" | "chunk-data" | "chunk-end" | "trailer";

const CRLF = [13, 10];

function indexOf(buf: Uint8Array, pattern: number[], from = 0): number {
  outer: for (let i = from; i <= buf.length - pattern.length; i++) {
    for (let j = 0; j < pattern.length; j++) if (buf[i + j] !== pattern[j]) continue outer;
    return i;
  }
  return -1;
}

export class ResponseReader {
  private buf = new Uint8Array(0);
  private state: State = "head";
  private remaining = 0;
  private current: ResponseEnd = { status: 0, close: false };

  /** Feeds bytes; returns the responses that completed. Throws on bytes that are not HTTP/1.1. */
  push(chunk: Uint8Array): ResponseEnd[] {
    // Keep leftovers as a copy: the runtime may reuse the chunk's memory after the callback.
    const merged = new Uint8Array(this.buf.length + chunk.length);
    merged.set(this.buf);
    merged.set(chunk, this.buf.length);
    this.buf = merged;
    const done: ResponseEnd[] = [];
    while (this.step(done));
    return done;
  }

  /** One state transition; false when more bytes are needed. */
  private step(done: ResponseEnd[]): boolean {
    switch (this.state) {
      case "head": {
        const end = indexOf(this.buf, [13, 10, 13, 10]);
        if (end < 0) return false;
        const complete = this.head(new TextDecoder("latin1").decode(this.buf.subarray(0, end)));
        this.buf = this.buf.subarray(end + 4);
        if (complete) this.finish(done);
        return true;
      }
      case "body":
      case "chunk-data": {
        const take = Math.min(this.remaining, this.buf.length);
        this.buf = this.buf.subarray(take);
        this.remaining -= take;
        if (this.remaining > 0) return false;
        if (this.state === "body") this.finish(done);
        else this.state = "chunk-end";
        return true;
      }
      case "chunk-end": {
        if (this.buf.length < 2) return false;
        this.buf = this.buf.subarray(2);
        this.state = "chunk-size";
        return true;
      }
      case "chunk-size": {
        const end = indexOf(this.buf, CRLF);
        if (end < 0) return false;
        const size = parseInt(new TextDecoder().decode(this.buf.subarray(0, end)).split(";")[0]!, 16);
        if (Number.isNaN(size)) throw new Error("bad chunk size");
        this.buf = this.buf.subarray(end + 2);
        this.remaining = size;
        this.state = size === 0 ? "trailer" : "chunk-data";
        return true;
      }
      case "trailer": {
        const end = indexOf(this.buf, CRLF);
        if (end < 0) return false;
        this.buf = this.buf.subarray(end + 2);
        if (end === 0) this.finish(done); // the empty line after the (usually absent) trailers
        return true;
      }
    }
  }

  /** Reads the head and sets up body framing; true when the response has no body left to read. */
  private head(text: string): boolean {
    const [statusLine, ...lines] = text.split("\r\n");
    const m = /^HTTP\/1\.[01] (\d{3})/.exec(statusLine ?? "");
    if (!m) throw new Error(`not an HTTP/1.1 response: ${JSON.stringify((statusLine ?? "").slice(0, 80))}`);
    const status = Number(m[1]);
    let length: number | undefined;
    let chunked = false;
    let close = statusLine!.startsWith("HTTP/1.0");
    for (const line of lines) {
      const colon = line.indexOf(":");
      const name = line.slice(0, colon).trim().toLowerCase();
      const value = line.slice(colon + 1).trim().toLowerCase();
      if (name === "content-length") length = Number(value);
      else if (name === "transfer-encoding") chunked = value.includes("chunked");
      else if (name === "connection") close = value.includes("close") ? true : value.includes("keep-alive") ? false : close;
    }
    this.current = { status, close };
    const bodiless = status === 204 || status === 304 || (status >= 100 && status < 200);
    if (chunked && !bodiless) {
      this.state = "chunk-size";
      return false;
    }
    if (length === undefined && !bodiless) throw new Error("response without Content-Length or chunked framing");
    this.state = "body";
    this.remaining = bodiless ? 0 : length!;
    return this.remaining === 0;
  }

  private finish(done: ResponseEnd[]): void {
    done.push(this.current);
    this.state = "head";
    this.remaining = 0;
  }
}
