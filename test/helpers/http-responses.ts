/**
 * HTTP/1.1 responses read back out of the bytes a raw client received (a mux stream's DATA, a
 * plain TLS connection), one after another as a kept-alive connection carries them.
 *
 *   const [first, second] = parseResponses(Buffer.concat(chunks));
 */

export interface HttpResponse {
  status: number;
  /** The header block, status line included, without the blank line that ends it (latin1). */
  head: string;
  /** Header names lowercased; a repeated header keeps its last value. */
  headers: Record<string, string>;
  /** The body, a chunked one decoded. */
  body: Buffer;
  /** The body as UTF-8 text. */
  text: string;
}

/**
 * The complete responses in `buf`, in order: each framed by content-length, or chunked (whole
 * once its last chunk and the blank line after it came); one with neither has no body. A
 * response still arriving, and whatever follows it, is left out.
 */
export function parseResponses(buf: Buffer): HttpResponse[] {
  const out: HttpResponse[] = [];
  let at = 0;
  for (let guard = 0; guard < 10_000 && at < buf.byteLength; guard++) {
    const end = buf.indexOf("\r\n\r\n", at, "latin1");
    if (end < 0) break;
    const head = buf.toString("latin1", at, end);
    const lines = head.split("\r\n");
    const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(lines[0]!)?.[1] ?? NaN);
    const headers: Record<string, string> = {};
    for (const line of lines.slice(1)) {
      const i = line.indexOf(":");
      headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
    }
    let p = end + 4;
    let body: Buffer;
    if (headers["transfer-encoding"]?.toLowerCase() === "chunked") {
      const parts: Buffer[] = [];
      let done = false;
      for (let g = 0; g < 100_000; g++) {
        const le = buf.indexOf("\r\n", p, "latin1");
        if (le < 0) break;
        const size = parseInt(buf.toString("latin1", p, le), 16);
        if (size === 0) {
          const fin = buf.indexOf("\r\n", le + 2, "latin1");
          if (fin < 0) break;
          p = fin + 2;
          done = true;
          break;
        }
        if (buf.byteLength < le + 2 + size + 2) break;
        parts.push(buf.subarray(le + 2, le + 2 + size));
        p = le + 2 + size + 2;
      }
      if (!done) break;
      body = Buffer.concat(parts);
    } else {
      const len = Number(headers["content-length"] ?? 0);
      if (buf.byteLength < p + len) break;
      body = buf.subarray(p, p + len);
      p += len;
    }
    out.push({ status, head, headers, body, text: body.toString("utf8") });
    at = p;
  }
  return out;
}
