/**
 * HTTP/2 by hand, for attack tests: frames and HPACK literals written byte by byte (so
 * malformed ones too, which node:http2's client refuses to send), and a client over plain
 * TCP, mTLS or an HTTP CONNECT tunnel that records every frame that comes back.
 */
import net from "node:net";
import tls from "node:tls";
import { HpackDecoder } from "../../src/proxy/h2/wire/hpack.ts";

export const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");
export const T = { DATA: 0, HEADERS: 1, RST: 3, SETTINGS: 4, PING: 6, GOAWAY: 7, WINDOW_UPDATE: 8, CONTINUATION: 9 } as const;
export const F = { END_STREAM: 1, ACK: 1, END_HEADERS: 4 } as const;
export const CANCEL = 8;

export function frame(type: number, flags: number, stream: number, payload: Uint8Array = Buffer.alloc(0)): Buffer {
  const b = Buffer.alloc(9 + payload.byteLength);
  b.writeUIntBE(payload.byteLength, 0, 3);
  b[3] = type;
  b[4] = flags;
  b.writeUInt32BE(stream & 0x7fffffff, 5);
  b.set(payload, 9);
  return b;
}
export function settings(pairs: [number, number][] = []): Buffer {
  const p = Buffer.alloc(6 * pairs.length);
  pairs.forEach(([id, v], i) => {
    p.writeUInt16BE(id, i * 6);
    p.writeUInt32BE(v, i * 6 + 2);
  });
  return frame(T.SETTINGS, 0, 0, p);
}
export function rstFrame(stream: number, code = CANCEL): Buffer {
  const p = Buffer.alloc(4);
  p.writeUInt32BE(code);
  return frame(T.RST, 0, stream, p);
}
export type OnFrame = (type: number, flags: number, stream: number, payload: Buffer) => void;
/** Frames read from a byte stream as it arrives (after the client preface when `preface`), each handed to `onFrame`. */
export function frameReader(preface: boolean, onFrame: OnFrame): (d: Buffer) => void {
  let buf = Buffer.alloc(0);
  let skip = preface ? 24 : 0;
  return (d: Buffer) => {
    buf = buf.byteLength === 0 ? Buffer.from(d) : Buffer.concat([buf, d]);
    if (skip > 0) {
      const n = Math.min(skip, buf.byteLength);
      buf = buf.subarray(n);
      skip -= n;
    }
    while (buf.byteLength >= 9) {
      const len = buf.readUIntBE(0, 3);
      if (buf.byteLength < 9 + len) break;
      onFrame(buf[3]!, buf[4]!, buf.readUInt32BE(5) & 0x7fffffff, buf.subarray(9, 9 + len));
      buf = buf.subarray(9 + len);
    }
  };
}

/** HPACK integer (RFC 7541 §5.1). */
export function hpackInt(value: number, prefixBits: number, first: number): number[] {
  const max = (1 << prefixBits) - 1;
  if (value < max) return [first | value];
  const out = [first | max];
  value -= max;
  while (value >= 128) {
    out.push((value % 128) + 128);
    value = Math.floor(value / 128);
  }
  out.push(value);
  return out;
}
export function hpackString(s: string): Buffer {
  const b = Buffer.from(s, "latin1");
  return Buffer.concat([Buffer.from(hpackInt(b.byteLength, 7, 0)), b]);
}
/** Literal header field without indexing, new name, no Huffman. */
export const literal = (name: string, value: string) => Buffer.concat([Buffer.from([0]), hpackString(name), hpackString(value)]);
/** Literal header field with incremental indexing, new name: it enters the dynamic table (index 62). */
export const literalIndexed = (name: string, value: string) => Buffer.concat([Buffer.from([0x40]), hpackString(name), hpackString(value)]);
export const indexed = (i: number) => Buffer.from(hpackInt(i, 7, 0x80));
export const block = (fields: [string, string][]) => Buffer.concat(fields.map(([n, v]) => literal(n, v)));
export const request = (authority: string, path: string, extra: [string, string][] = [], method = "GET"): [string, string][] => [
  [":method", method],
  [":scheme", "http"],
  [":path", path],
  [":authority", authority],
  ...extra,
];

/** A header block split into HEADERS + CONTINUATION frames of 16,000 bytes. */
export function headerFrames(stream: number, hb: Buffer, endStream: boolean): Buffer {
  const out: Buffer[] = [];
  for (let off = 0; off < hb.byteLength || off === 0; off += 16000) {
    const last = off + 16000 >= hb.byteLength;
    out.push(frame(off === 0 ? T.HEADERS : T.CONTINUATION, (last ? F.END_HEADERS : 0) | (off === 0 && endStream ? F.END_STREAM : 0), stream, hb.subarray(off, off + 16000)));
    if (last) break;
  }
  return Buffer.concat(out);
}

export interface Frame {
  type: number;
  flags: number;
  stream: number;
  payload: Buffer;
}

/** A client that writes frames as given and records every frame that comes back. */
export class RawH2 {
  frames: Frame[] = [];
  closed = false;
  private buf = Buffer.alloc(0);
  private constructor(readonly sock: net.Socket) {
    sock.on("data", (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      while (this.buf.byteLength >= 9) {
        const len = this.buf.readUIntBE(0, 3);
        if (this.buf.byteLength < 9 + len) break;
        const f = { type: this.buf[3]!, flags: this.buf[4]!, stream: this.buf.readUInt32BE(5) & 0x7fffffff, payload: Buffer.from(this.buf.subarray(9, 9 + len)) };
        this.buf = this.buf.subarray(9 + len);
        if (this.frames.length < 50_000) this.frames.push(f);
        if (f.type === T.SETTINGS && !(f.flags & F.ACK)) this.write(frame(T.SETTINGS, F.ACK, 0));
      }
    });
    sock.on("close", () => (this.closed = true));
    sock.on("error", () => (this.closed = true));
  }
  static async plain(port: number, initial: [number, number][] = []): Promise<RawH2> {
    const sock = net.connect(port, "127.0.0.1");
    await new Promise<void>((res, rej) => sock.once("connect", res).once("error", rej));
    const c = new RawH2(sock);
    c.write(Buffer.concat([PREFACE, settings(initial)]));
    return c;
  }
  static async tls(port: number, creds: { cert: string; key: string; ca: string }, initial: [number, number][] = []): Promise<RawH2> {
    const sock = tls.connect({ port, host: "127.0.0.1", ...creds, ALPNProtocols: ["h2"], rejectUnauthorized: true, checkServerIdentity: () => undefined });
    await new Promise<void>((res, rej) => sock.once("secureConnect", res).once("error", rej));
    const c = new RawH2(sock);
    c.write(Buffer.concat([PREFACE, settings(initial)]));
    return c;
  }
  /** HTTP/2 inside an HTTP CONNECT tunnel on the outbound listener, as grpc-js sends it through http_proxy. */
  static async overConnect(port: number, target: string): Promise<RawH2> {
    const sock = net.connect(port, "127.0.0.1");
    await new Promise<void>((res, rej) => sock.once("connect", res).once("error", rej));
    sock.write(`CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n\r\n`);
    let head = "";
    await new Promise<void>((res, rej) => {
      const onData = (d: Buffer) => {
        head += d.toString("latin1");
        if (!head.includes("\r\n\r\n")) return;
        sock.off("data", onData);
        if (!head.startsWith("HTTP/1.1 200")) return rej(new Error(`CONNECT refused: ${head}`));
        if (!head.endsWith("\r\n\r\n")) return rej(new Error("bytes after the CONNECT answer"));
        res();
      };
      sock.on("data", onData);
    });
    const c = new RawH2(sock);
    c.write(Buffer.concat([PREFACE, settings()]));
    return c;
  }
  write(b: Buffer): boolean {
    if (this.closed) return false;
    return this.sock.write(b);
  }
  headers(stream: number, fields: [string, string][], endStream = true): void {
    this.write(headerFrames(stream, block(fields), endStream));
  }
  of(type: number, stream?: number): Frame[] {
    return this.frames.filter((f) => f.type === type && (stream === undefined || f.stream === stream));
  }
  goawayCode(): number | undefined {
    return this.of(T.GOAWAY)[0]?.payload.readUInt32BE(4);
  }
  /** "rst:<code>", "response" (a HEADERS frame came back), "goaway:<code>", "closed" or "none". */
  outcome(stream: number): string {
    const rst = this.of(T.RST, stream)[0];
    if (rst) return `rst:${rst.payload.readUInt32BE(0)}`;
    if (this.of(T.HEADERS, stream).length) return "response";
    if (this.goawayCode() !== undefined) return `goaway:${this.goawayCode()}`;
    return this.closed ? "closed" : "none";
  }
  /** The :status of the stream's response head, decoding every header block this connection received in order. */
  status(stream: number): string | undefined {
    const decoder = new HpackDecoder();
    for (const f of this.of(T.HEADERS)) {
      const fields = decoder.decode(f.payload);
      if (f.stream === stream) return fields[fields.indexOf(":status") + 1];
    }
    return undefined;
  }
  /** The stream's end as the client reads it: "end-stream" (a frame with END_STREAM: a complete response), "rst:<code>", "closed" or "open". */
  ending(stream: number): string {
    for (const f of this.frames) {
      if (f.stream !== stream) continue;
      if (f.type === T.RST) return `rst:${f.payload.readUInt32BE(0)}`;
      if ((f.type === T.DATA || f.type === T.HEADERS) && f.flags & F.END_STREAM) return "end-stream";
    }
    return this.closed ? "closed" : "open";
  }
  dataBytes(stream: number): number {
    return this.of(T.DATA, stream).reduce((n, f) => n + f.payload.byteLength, 0);
  }
  close(): void {
    this.sock.destroy();
  }
}

