/**
 * mesh-mux/1 spoken by hand, for the suites that attack a sidecar's mux sessions or watch them
 * on the wire: the protocol restated from its description (frame.ts's comment and the README)
 * on purpose, since a test must not trust the code under test; frame builders; a raw client
 * that records every frame the server sends (MuxClient); and the frame loop of a hand-built
 * server (muxServer), whose streams a test answers as it likes.
 *
 *   const c = await MuxClient.open(inboundPort, clientTls(fx, "orders"));
 *   c.get(1, "/echo");
 *   const r = await c.response(1); // an HttpResponse, or undefined
 */
import type { Socket, TCPSocketListener, TLSOptions } from "bun";
import { parseResponses, type HttpResponse } from "./http-responses.ts";
import type { ClientTls } from "./raw-http.ts";
import { until } from "./wait.ts";

// ---- the protocol ----

/** Every frame starts with 10 bytes: type, flags, stream id (u32 BE), value (u32 BE; a DATA frame's payload length). */
export const HEADER = 10;
export const MAX_PAYLOAD = 64 * 1024;
/** Each side's window on a new stream. */
export const WINDOW0 = 128 * 1024;
export const MAX_STREAMS = 128;
export const MAX_WINDOW = 2 ** 31 - 1;
export const T = { DATA: 0, WINDOW: 1, FIN: 2, RESET: 3, GOAWAY: 4 } as const;
export const RESET_CANCEL = 0;
export const RESET_REFUSED = 1;

/** ALPN wire format: each name prefixed by its length. */
export function alpn(...names: string[]): Buffer {
  return Buffer.concat(names.map((n) => Buffer.concat([Buffer.from([n.length]), Buffer.from(n, "latin1")])));
}

/** A frame's 10-byte header (any values, valid or not); a DATA frame's payload follows it. */
export function frameHeader(type: number, id: number, value: number, flags = 0): Buffer {
  const b = Buffer.alloc(HEADER);
  b[0] = type;
  b[1] = flags;
  b.writeUInt32BE(id >>> 0, 2);
  b.writeUInt32BE(value >>> 0, 6);
  return b;
}

/** One DATA frame carrying all of `payload` (latin1 when text), however large. */
export function dataFrame(id: number, payload: string | Uint8Array): Buffer {
  const p = typeof payload === "string" ? Buffer.from(payload, "latin1") : Buffer.from(payload);
  return Buffer.concat([frameHeader(T.DATA, id, p.byteLength), p]);
}

// ---- a hand-built client ----

export interface StreamState {
  chunks: Buffer[];
  /** DATA payload bytes received. */
  bytes: number;
  /** DATA frames received, with their sizes. */
  frames: number[];
  fin: boolean;
  /** RESET value received, if any. */
  reset: number | undefined;
  /** WINDOW credit received from the server. */
  credit: number;
  /** WINDOW frames received (values). */
  windows: number[];
  /** DATA payload bytes we sent. */
  sent: number;
}

export interface OpenOptions {
  /** ALPN offer in wire format; null offers none. Default: mesh-mux/1 only. */
  alpn?: Buffer | null;
  /** Credit every DATA payload back at once (default true). */
  autoWindow?: boolean;
}

/**
 * A raw mesh-mux/1 client over TLS (the server's certificate is not checked): writes frames as
 * given, queued behind what the socket has not taken, and records every frame it reads, per
 * stream. It credits each DATA payload back at once unless told not to (autoWindow, noCredit).
 */
export class MuxClient {
  sock: Socket<MuxClient> | undefined;
  /** What the handshake chose (false/null when nothing). */
  alpnProtocol: string | false | null = null;
  /** The handshake event fired (success or not). */
  handshook = false;
  /** Bun's verdict on the server's chain and name (false here: mesh certificates carry no DNS name). */
  verified = false;
  /** The handshake completed: the error, if any, is only Bun's own verdict on the server's name. */
  get handshakeOk(): boolean {
    return this.handshook && !this.closedInHandshake && !/ALERT/i.test(this.authError ?? "");
  }
  closedInHandshake = false;
  /** The handshake's error, as Bun reports it (a verification failure, or an alert). */
  authError: string | undefined;
  closed = false;
  error: string | undefined;
  goaways: number[] = [];
  /** Bytes received while ALPN chose nothing: not frames. */
  plain: Buffer[] = [];
  readonly streams = new Map<number, StreamState>();
  /** Credit back every DATA payload at once, except on the streams in noCredit. */
  autoWindow: boolean;
  readonly noCredit = new Set<number>();
  /** RESETs on high ids (see onData). */
  manyResets = 0;
  /** A write found the socket closed. */
  writeFailed = false;
  /** Frames the server sent that no valid server sends. */
  oddities: string[] = [];
  private inbuf: Buffer = Buffer.alloc(0);
  private outq: Buffer[] = [];
  private handshakeDone!: () => void;
  private readonly handshakeP = new Promise<void>((r) => (this.handshakeDone = r));

  private constructor(autoWindow: boolean) {
    this.autoWindow = autoWindow;
  }

  /** Connects to 127.0.0.1:`port` with `tls` and waits for the handshake (or the close), at most 5 s; a failed connect is a closed client with its error. */
  static async open(port: number, tls: ClientTls, opts: OpenOptions = {}): Promise<MuxClient> {
    const c = new MuxClient(opts.autoWindow ?? true);
    const offer = opts.alpn === undefined ? alpn("mesh-mux/1") : opts.alpn;
    try {
      c.sock = await Bun.connect<MuxClient>({
        hostname: "127.0.0.1",
        port,
        data: c,
        tls: { cert: tls.cert, key: tls.key, ca: tls.ca, rejectUnauthorized: false, ...(offer ? { ALPNProtocols: offer } : {}) },
        socket: {
          handshake(s, ok, authError) {
            s.data.handshook = true;
            s.data.verified = ok;
            s.data.authError = authError?.message;
            s.data.alpnProtocol = s.alpnProtocol;
            s.data.handshakeDone();
          },
          data: (s, chunk) => s.data.onData(chunk),
          drain: (s) => s.data.flush(),
          close(s) {
            if (!s.data.handshook) s.data.closedInHandshake = true;
            s.data.closed = true;
            s.data.handshakeDone();
          },
          error(s, err) {
            s.data.error ??= err.message;
            s.data.closed = true;
            s.data.handshakeDone();
          },
          connectError(s, err) {
            s.data.error ??= err.message;
            s.data.closed = true;
            s.data.handshakeDone();
          },
        },
      });
    } catch (err) {
      c.error = (err as Error).message;
      c.closed = true;
      return c;
    }
    await Promise.race([c.handshakeP, Bun.sleep(5000)]);
    return c;
  }

  stream(id: number): StreamState {
    let s = this.streams.get(id);
    if (!s) {
      s = { chunks: [], bytes: 0, frames: [], fin: false, reset: undefined, credit: 0, windows: [], sent: 0 };
      this.streams.set(id, s);
    }
    return s;
  }

  // ---- reading ----

  private onData(chunk: Buffer): void {
    if (this.alpnProtocol !== "mesh-mux/1") {
      this.plain.push(Buffer.from(chunk));
      return;
    }
    this.inbuf = this.inbuf.byteLength === 0 ? Buffer.from(chunk) : Buffer.concat([this.inbuf, chunk]);
    let at = 0;
    const credits: Buffer[] = [];
    while (this.inbuf.byteLength - at >= HEADER) {
      const type = this.inbuf[at]!;
      const flags = this.inbuf[at + 1]!;
      const id = this.inbuf.readUInt32BE(at + 2);
      const value = this.inbuf.readUInt32BE(at + 6);
      if (flags !== 0) this.oddities.push(`flags ${flags}`);
      if (type === T.DATA) {
        if (this.inbuf.byteLength - at < HEADER + value) break;
        const payload = Buffer.from(this.inbuf.subarray(at + HEADER, at + HEADER + value));
        at += HEADER + value;
        if (value === 0 || value > MAX_PAYLOAD) this.oddities.push(`DATA of ${value} on ${id}`);
        const s = this.stream(id);
        s.chunks.push(payload);
        s.bytes += value;
        s.frames.push(value);
        if (this.autoWindow && !this.noCredit.has(id)) credits.push(frameHeader(T.WINDOW, id, value));
        continue;
      }
      at += HEADER;
      if (type === T.WINDOW) {
        const s = this.stream(id);
        s.credit += value;
        s.windows.push(value);
      } else if (type === T.FIN) this.stream(id).fin = true;
      else if (type === T.RESET) {
        // Ids past the first thousands are floods: counted, not kept.
        if (id > 10_000 && !this.streams.has(id)) this.manyResets++;
        else this.stream(id).reset = value;
      }
      else if (type === T.GOAWAY) {
        if (id !== 0) this.oddities.push(`GOAWAY on ${id}`);
        this.goaways.push(value);
      } else this.oddities.push(`type ${type}`);
    }
    this.inbuf = this.inbuf.subarray(at);
    if (credits.length > 0) this.raw(Buffer.concat(credits));
  }

  // ---- writing ----

  /** Writes bytes as given, queued behind anything the socket did not take yet. */
  raw(bytes: Uint8Array): void {
    if (this.closed || !this.sock) return;
    const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    if (this.outq.length > 0) {
      this.outq.push(b);
      return;
    }
    const n = this.sock.write(b);
    if (n < 0) {
      this.writeFailed = true;
      return;
    }
    if (n < b.byteLength) this.outq.push(b.subarray(n));
  }

  private flush(): void {
    while (this.outq.length > 0 && !this.closed && this.sock) {
      const b = this.outq[0]!;
      const n = this.sock.write(b);
      if (n < 0) return;
      if (n < b.byteLength) {
        this.outq[0] = b.subarray(n);
        return;
      }
      this.outq.shift();
    }
  }

  /** Bytes written but not yet taken by the socket. */
  get unsent(): number {
    return this.outq.reduce((n, b) => n + b.byteLength, 0);
  }

  frame(type: number, id: number, value: number, flags = 0, payload?: Uint8Array): void {
    this.raw(payload ? Buffer.concat([frameHeader(type, id, value, flags), payload]) : frameHeader(type, id, value, flags));
  }

  /** DATA frames of at most 64 KiB carrying `bytes` on stream `id` (no window check). */
  data(id: number, bytes: string | Uint8Array): void {
    const b = typeof bytes === "string" ? Buffer.from(bytes, "latin1") : Buffer.from(bytes);
    const parts: Buffer[] = [];
    for (let at = 0; at < b.byteLength; at += MAX_PAYLOAD) {
      const p = b.subarray(at, Math.min(b.byteLength, at + MAX_PAYLOAD));
      parts.push(frameHeader(T.DATA, id, p.byteLength), p);
    }
    this.stream(id).sent += b.byteLength;
    this.raw(Buffer.concat(parts));
  }

  /** Bytes the server lets us send on `id` now, as far as we know. */
  sendRoom(id: number): number {
    const s = this.stream(id);
    return WINDOW0 + s.credit - s.sent;
  }

  /** Sends `bytes` on `id`, never beyond the window the server granted; waits for WINDOW frames. */
  async dataWithinWindow(id: number, bytes: Uint8Array, timeoutMs = 10_000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    let at = 0;
    while (at < bytes.byteLength) {
      if (this.closed || Date.now() > deadline) return false;
      const room = this.sendRoom(id);
      if (room <= 0 || this.unsent > 1 << 20) {
        await Bun.sleep(2);
        continue;
      }
      const n = Math.min(room, MAX_PAYLOAD, bytes.byteLength - at);
      this.data(id, bytes.subarray(at, at + n));
      at += n;
    }
    return true;
  }

  window(id: number, credit: number): void {
    this.frame(T.WINDOW, id, credit);
  }

  /** A GET for `path` to payments (the service behind the inbound these suites attack), with `extra` header lines (each ending in CRLF). */
  get(id: number, path: string, extra = ""): void {
    this.data(id, `GET ${path} HTTP/1.1\r\nhost: payments\r\n${extra}\r\n`);
  }

  /** The HTTP/1.1 responses complete so far on stream `id`. */
  responses(id: number): HttpResponse[] {
    return parseResponses(Buffer.concat(this.stream(id).chunks));
  }

  /** Polls `check` every 5 ms for `ms` (see wait.ts's until). */
  until(check: () => boolean, ms = 5000): Promise<boolean> {
    return until(check, ms);
  }

  /** Waits for `n` complete responses on stream `id` (or the close); the `n`th. */
  async response(id: number, n = 1, ms = 5000): Promise<HttpResponse | undefined> {
    await until(() => this.responses(id).length >= n || this.closed, ms);
    return this.responses(id)[n - 1];
  }

  end(): void {
    if (!this.closed) this.sock?.end();
  }

  terminate(): void {
    if (!this.closed) this.sock?.terminate();
  }
}

// ---- a hand-built server ----

/** One connection to a muxServer, with what the test keeps for each of its streams (`S`). */
export interface MuxServerConn<S> {
  /** Its place among the server's connections, from 0. */
  index: number;
  sock: Socket<MuxServerConn<S>>;
  /** Bytes read and not yet a whole frame. */
  inbuf: Buffer;
  /** The streams open, by id. */
  streams: Map<number, S>;
  /** The highest stream id opened. */
  highest: number;
  /** The connection closed. */
  gone: boolean;
}

export interface MuxServerStreams<S> {
  /**
   * A DATA frame opens stream `id` (higher than any opened before on `conn`): what to keep
   * for it, or undefined to open nothing (that frame and any later one on `id` are dropped;
   * the handler sends whatever RESET it means to).
   */
  open(conn: MuxServerConn<S>, id: number): S | undefined;
  /** A DATA frame's payload on an open stream, `kept` what the stream holds (conn.streams.get(id)). */
  data(conn: MuxServerConn<S>, id: number, kept: S, payload: Buffer): void;
}

export interface MuxServer<S> {
  listener: TCPSocketListener<MuxServerConn<S>>;
  port: number;
  conns: MuxServerConn<S>[];
}

/**
 * A mesh-mux/1 server on 127.0.0.1 written from the protocol's description: it splits what
 * each connection sends into frames and hands DATA payloads to `streams`. A DATA frame on an
 * id neither open nor higher than every id opened is dropped; FIN and RESET forget a stream;
 * WINDOW and GOAWAY are read and ignored; it sends nothing of its own (no WINDOW: `streams`
 * writes every frame on conn.sock).
 */
export function muxServer<S>(tls: TLSOptions, streams: MuxServerStreams<S>): MuxServer<S> {
  const conns: MuxServerConn<S>[] = [];
  const onFrames = (c: MuxServerConn<S>) => {
    let at = 0;
    for (let guard = 0; guard < 10_000 && c.inbuf.byteLength - at >= HEADER; guard++) {
      const type = c.inbuf[at]!;
      const id = c.inbuf.readUInt32BE(at + 2);
      const value = c.inbuf.readUInt32BE(at + 6);
      if (type !== T.DATA) {
        at += HEADER;
        if (type === T.FIN || type === T.RESET) c.streams.delete(id);
        continue;
      }
      if (c.inbuf.byteLength - at < HEADER + value) break;
      const payload = c.inbuf.subarray(at + HEADER, at + HEADER + value);
      at += HEADER + value;
      let kept = c.streams.get(id);
      if (kept === undefined) {
        if (id <= c.highest) continue;
        c.highest = id;
        kept = streams.open(c, id);
        if (kept === undefined) continue;
        c.streams.set(id, kept);
      }
      streams.data(c, id, kept, payload);
    }
    c.inbuf = c.inbuf.subarray(at);
  };
  const listener = Bun.listen<MuxServerConn<S>>({
    hostname: "127.0.0.1",
    port: 0,
    tls,
    socket: {
      open(sock) {
        sock.data = { index: conns.length, sock, inbuf: Buffer.alloc(0), streams: new Map(), highest: 0, gone: false };
        conns.push(sock.data);
      },
      data(sock, chunk) {
        sock.data.inbuf = Buffer.concat([sock.data.inbuf, chunk]);
        onFrames(sock.data);
      },
      close(sock) {
        sock.data.gone = true;
      },
    },
  });
  return { listener, port: listener.port, conns };
}
