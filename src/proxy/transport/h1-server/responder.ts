/**
 * Writes one response onto a downstream connection: a head, then the body framed as the
 * head declared (Content-Length, chunked, or until the connection closes), or a whole
 * small response at once. A response cut short is never made to look complete: the
 * connection is reset instead of ended.
 */
import { chunkFrame } from "../h1/request-body.ts";

/** How the body is delimited for the client: none, a Content-Length, chunked, or the connection's close. */
export type ResponseBodyKind = "none" | "length" | "chunked" | "close";

/** What a responder needs from its connection. */
export interface ResponderHost {
  /**
   * True when the socket took everything; otherwise a copy of the rest is queued and
   * `drain` follows. Of a Uint8Array, bytes [start, end) go out; it may be reused once this returns.
   */
  write(data: string | Uint8Array, start?: number, end?: number): boolean;
  /** As write(), for bytes nobody writes to again: they may leave at the end of the turn. */
  writeLater(data: Uint8Array, start: number, end: number): boolean;
  /** The response is complete. */
  responseDone(responder: Responder): void;
  /** The response cannot be completed: reset the connection. */
  abort(responder: Responder): void;
  /**
   * Decided as the head goes out: the connection ends after this response (the client
   * asked, the server is closing, the request body cannot be read to its end, or
   * `closeDelimited`: the body ends with the connection, so nothing may follow it).
   */
  endsAfterResponse(closeDelimited: boolean): boolean;
  /** The client speaks HTTP/1.1 (it can read chunked). */
  readonly minor: 0 | 1;
}

const REASONS: Record<number, string> = { 200: "OK", 400: "Bad Request", 404: "Not Found", 413: "Content Too Large", 417: "Expectation Failed", 431: "Request Header Fields Too Large", 500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout", 505: "HTTP Version Not Supported" };
/** Visible ASCII, spaces and line ends: a head of only these is written as a string (one write, no copy). */
const NOT_PLAIN = /[^\t\r\n\x20-\x7e]/;

/** An HTTP/1.1 status line; a missing reason phrase is filled in for the common statuses. */
export function statusLine(status: number, reason: string): string {
  return `HTTP/1.1 ${status} ${reason || REASONS[status] || ""}\r\n`;
}

/**
 * A whole response that ends the connection, as one string, for a socket no Responder
 * serves: a connection refused at accept, an upgrade not taken.
 */
export function closingResponse(e: { status: number; headers: Record<string, string>; body: string }): string {
  let lines = "";
  for (const name in e.headers) lines += `${name}: ${e.headers[name]}\r\n`;
  return `${statusLine(e.status, "")}${lines}connection: close\r\ncontent-length: ${Buffer.byteLength(e.body)}\r\n\r\n${e.body}`;
}

/**
 * The tail of a kept-alive HTTP/1.1 response with a small Content-Length, by length: made
 * once, so it is not built (and flattened, to be written) for every response.
 */
const LENGTH_TAILS_KEPT = 4096;
const LENGTH_TAILS: string[] = [];

export class Responder {
  headSent = false;
  finished = false;
  private kind: ResponseBodyKind = "none";
  /**
   * The head, held back to go out in one write with the first body bytes (one TLS
   * record, one syscall): heldUsed bytes of held, and room after them for a body.
   */
  private held: Buffer | undefined;
  private heldUsed = 0;
  /** The body went out with the head (sendWhole). */
  private whole = false;
  /** Called once when the socket can take more after a write returned false. */
  onDrain: (() => void) | undefined;
  /** Told once if the connection goes away before the response is complete. */
  onGone: { responseGone(): void } | undefined;

  constructor(
    private readonly host: ResponderHost,
    /** The request was HEAD: a body is never written, whatever the head says. */
    readonly isHead: boolean,
  ) {}

  /**
   * Starts the response: decides its framing and returns the lines that end its head
   * (framing, Connection, the blank line), or undefined if a head was already sent.
   * `length`: the body's length for "length"; for "none", the length a HEAD or 304
   * response may state, or -1. Send the head next, with head() or sendHead().
   */
  start(kind: ResponseBodyKind, length: number): string | undefined {
    if (this.headSent || this.finished) return undefined;
    this.headSent = true;
    // An HTTP/1.0 client cannot read chunked: the body then ends with the connection.
    if (kind === "chunked" && this.host.minor === 0) kind = "close";
    this.kind = kind;
    const closes = this.host.endsAfterResponse(kind === "close");
    if (kind === "length" && length < LENGTH_TAILS_KEPT && !closes && this.host.minor === 1) return (LENGTH_TAILS[length] ??= `content-length: ${length}\r\n\r\n`);
    let tail = "";
    if (kind === "length") tail = `content-length: ${length}\r\n`;
    else if (kind === "chunked") tail = "transfer-encoding: chunked\r\n";
    // A response to HEAD (or a 304) may state the length the body would have had.
    else if (kind === "none" && length >= 0) tail = `content-length: ${length}\r\n`;
    if (closes) tail += "connection: close\r\n";
    else if (this.host.minor === 0) tail += "connection: keep-alive\r\n";
    return tail + "\r\n";
  }

  /**
   * Starts a response that goes out whole as the upstream sent it, its own Content-Length
   * line included (sendWhole), if this side adds nothing to it: the client speaks HTTP/1.1,
   * the connection stays open, and the request was not HEAD. The body pieces that follow
   * are then already out, and write() takes them as sent.
   */
  startWhole(): boolean {
    if (this.headSent || this.finished || this.isHead || this.host.minor !== 1 || this.host.endsAfterResponse(false)) return false;
    this.headSent = true;
    this.kind = "length";
    this.whole = true;
    return true;
  }

  /** After startWhole(): the head and the whole body, bytes[start..end), as received (never written to again). */
  sendWhole(bytes: Uint8Array, start: number, end: number): boolean {
    return this.host.writeLater(bytes, start, end);
  }

  /**
   * A whole head from strings: `fieldLines` are `name: value\r\n` lines to pass on as
   * they are (the caller has removed hop-by-hop fields). See start() and sendHead().
   */
  head(status: number, reason: string, fieldLines: string, kind: ResponseBodyKind, length: number): boolean {
    const tail = this.start(kind, length);
    if (tail === undefined) return false;
    const head = `${statusLine(status, reason)}${fieldLines}${tail}`;
    // Field values may hold obs-text (bytes 0x80-0xFF): a string would go out as UTF-8.
    if (this.kind === "none" || this.isHead) return this.host.write(NOT_PLAIN.test(head) ? Buffer.from(head, "latin1") : head);
    return this.sendHead(Buffer.from(head, "latin1"), head.length);
  }

  /**
   * Sends the head in `bytes[0..used)` (after start()), or holds it to go out with the
   * first body bytes when a body follows (call flush() if that body may take a while);
   * body bytes that fit after `used` are copied there. Returns false when the socket is full.
   */
  sendHead(bytes: Buffer, used: number): boolean {
    if (this.kind === "none" || this.isHead) return this.host.write(bytes, 0, used);
    this.held = bytes;
    this.heldUsed = used;
    return true;
  }

  /** Sends a held head now: the body will come later (a stream), and the client should see the head meanwhile. */
  flush(): boolean {
    const held = this.held;
    if (held === undefined) return true;
    this.held = undefined;
    return this.host.write(held, 0, this.heldUsed);
  }

  /** A body piece, data[start..end); false when the socket is full (wait for onDrain). */
  write(data: Uint8Array, start = 0, end = data.byteLength): boolean {
    if (this.finished || end <= start || this.isHead || this.whole) return true;
    if (this.kind === "chunked") {
      data = chunkFrame(start === 0 && end === data.byteLength ? data : data.subarray(start, end));
      start = 0;
      end = data.byteLength;
    }
    const held = this.held;
    if (held === undefined) return this.host.write(data, start, end);
    this.held = undefined;
    const used = this.heldUsed;
    const total = used + end - start;
    const out = total <= held.length ? held : Buffer.allocUnsafe(total);
    if (out !== held) held.copy(out, 0, 0, used);
    // Buffer's copy takes a range of any Uint8Array: no view of it is made.
    Buffer.prototype.copy.call(data, out, used, start, end);
    return this.host.write(out, 0, total);
  }

  end(): void {
    if (this.finished) return;
    this.flush();
    if (this.kind === "chunked" && !this.isHead) this.host.write("0\r\n\r\n");
    this.finished = true;
    this.host.responseDone(this);
  }

  /** A whole response from the proxy itself (errors, refusals). */
  respond(status: number, headers: Record<string, string>, body: string): void {
    if (this.headSent || this.finished) return;
    const bytes = Buffer.from(body, "utf8");
    let lines = "";
    for (const name in headers) lines += `${name}: ${headers[name]}\r\n`;
    this.head(status, "", lines, this.isHead ? "none" : "length", bytes.byteLength);
    this.write(bytes);
    this.end();
  }

  /** The response cannot be finished (upstream failed mid-body): the client must see an error, not an end. */
  abort(): void {
    if (this.finished) return;
    this.finished = true;
    this.host.abort(this);
  }

  /** The connection closed under the response. */
  gone(): void {
    if (this.finished) return;
    this.finished = true;
    const watcher = this.onGone;
    this.onGone = undefined;
    watcher?.responseGone();
  }

  drained(): void {
    const cb = this.onDrain;
    this.onDrain = undefined;
    cb?.();
  }
}
