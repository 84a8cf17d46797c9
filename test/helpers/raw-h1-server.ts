/**
 * A scripted HTTP/1 server on Bun.listen for client tests: it splits what arrives into
 * requests (Content-Length or chunked bodies, read naively) and hands each to the test,
 * which answers with whatever bytes it likes — including malformed ones no real server
 * would send. Counts connections, closes and requests per connection.
 */
import type { Socket, TCPSocketListener } from "bun";

export interface RawRequest {
  /** The request head, latin1, CRLF CRLF included. */
  head: string;
  body: Buffer;
  /** 0-based index of the connection (in accept order) and of the request on it. */
  conn: number;
  nth: number;
  /** Writes bytes as given (backpressure handled). */
  reply(bytes: string | Uint8Array): void;
  /** Half-closes after queued bytes went out. */
  end(): void;
  /** Drops the connection now. */
  destroy(): void;
  socket: Socket<ConnState>;
}

export interface RawServer {
  port: number;
  requests: RawRequest[];
  /** Connections accepted / closed so far. */
  accepted: number;
  closed: number;
  /** Every byte received on each connection (latin1), by connection index. */
  received: string[];
  stop(): void;
}

export interface ConnState {
  index: number;
  nth: number;
  buf: Buffer;
  out: Uint8Array[];
  endAfterFlush: boolean;
}

export interface RawServerOptions {
  tls?: { cert: string; key: string; ca?: string; requestCert?: boolean };
  /** Called on accept (e.g. to never answer). */
  onOpen?(socket: Socket<ConnState>): void;
  /** Don't parse requests; just record bytes. */
  recordOnly?: boolean;
}

export function rawServer(onRequest: (r: RawRequest) => void, opts: RawServerOptions = {}): RawServer {
  const server: RawServer = { port: 0, requests: [], accepted: 0, closed: 0, received: [], stop: () => listener.stop(true) };
  const flush = (s: Socket<ConnState>) => {
    const q = s.data.out;
    while (q.length) {
      const head = q[0]!;
      const n = s.write(head);
      if (n < 0) return;
      if (n < head.byteLength) {
        q[0] = head.subarray(n);
        return;
      }
      q.shift();
    }
    if (s.data.endAfterFlush) s.end();
  };
  const listener: TCPSocketListener<ConnState> = Bun.listen<ConnState>({
    hostname: "127.0.0.1",
    port: 0,
    ...(opts.tls ? { tls: { ...opts.tls, rejectUnauthorized: opts.tls.requestCert ?? false } } : {}),
    socket: {
      open(s) {
        s.data = { index: server.accepted++, nth: 0, buf: Buffer.alloc(0), out: [], endAfterFlush: false };
        server.received[s.data.index] = "";
        opts.onOpen?.(s);
      },
      data(s, chunk) {
        server.received[s.data.index] += chunk.toString("latin1");
        if (opts.recordOnly) return;
        s.data.buf = Buffer.concat([s.data.buf, chunk]);
        for (;;) {
          const req = takeRequest(s.data.buf);
          if (!req) return;
          s.data.buf = s.data.buf.subarray(req.used);
          const r: RawRequest = {
            head: req.head,
            body: req.body,
            conn: s.data.index,
            nth: s.data.nth++,
            reply(bytes) {
              s.data.out.push(typeof bytes === "string" ? Buffer.from(bytes, "latin1") : bytes);
              flush(s);
            },
            end() {
              s.data.endAfterFlush = true;
              flush(s);
            },
            destroy() {
              s.terminate();
            },
            socket: s,
          };
          server.requests.push(r);
          onRequest(r);
        }
      },
      drain(s) {
        flush(s);
      },
      close() {
        server.closed++;
      },
      error() {},
    },
  });
  server.port = listener.port;
  return server;
}

/** One complete request at the start of `buf`, or undefined if more bytes are needed. */
function takeRequest(buf: Buffer): { head: string; body: Buffer; used: number } | undefined {
  const end = buf.indexOf("\r\n\r\n");
  if (end < 0) return undefined;
  const head = buf.toString("latin1", 0, end + 4);
  const cl = /\r\ncontent-length: *(\d+)/i.exec(head);
  if (cl) {
    const n = Number(cl[1]);
    if (buf.length < end + 4 + n) return undefined;
    return { head, body: buf.subarray(end + 4, end + 4 + n), used: end + 4 + n };
  }
  if (/\r\ntransfer-encoding: *chunked/i.test(head)) {
    // Decode naively: enough for tests that send well-formed chunked bodies.
    const parts: Buffer[] = [];
    let at = end + 4;
    for (;;) {
      const lf = buf.indexOf("\r\n", at);
      if (lf < 0) return undefined;
      const size = parseInt(buf.toString("latin1", at, lf), 16);
      if (buf.length < lf + 2 + size + 2) return undefined;
      if (size === 0) return { head, body: Buffer.concat(parts), used: lf + 4 };
      parts.push(buf.subarray(lf + 2, lf + 2 + size));
      at = lf + 2 + size + 2;
    }
  }
  return { head, body: Buffer.alloc(0), used: end + 4 };
}

/** A header of a raw request head (first value, lower-cased name lookup). */
export function headerOf(head: string, name: string): string | undefined {
  for (const line of head.split("\r\n").slice(1)) {
    const i = line.indexOf(":");
    if (i > 0 && line.slice(0, i).toLowerCase() === name) return line.slice(i + 1).trim();
  }
  return undefined;
}
