/**
 * One request stream of a server session (server-session.ts), as the stream handlers see
 * it: the request's headers, its body handed to one handler (held, within the stream's
 * flow-control window, until a handler takes it or while it is paused), and the response
 * written back: head, body (queued past the peer's window) and an end with or without
 * trailers. A reset either way, or the connection's end, tells the handler `gone`.
 */
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from "node:http2";
import { ErrorCode } from "./frames.ts";
import { WireStream, type WireSession } from "./wire-stream.ts";
import { declaredLength, outgoingFields } from "./fields.ts";

/** Who reads a stream's request and is told when its response may go on. */
export interface DownstreamHandler {
  /** A piece of the request body. */
  data(chunk: Buffer): void;
  /** The request body is complete (END_STREAM): never called for a stream that was reset. */
  end(): void;
  /** A write that returned false has been taken: more may go. */
  drain(): void;
  /** The stream is over before its response was: reset by the client, or its connection went. */
  gone(): void;
}

/** What a stream asks of its session (connection.ts): frames, and its end. */
export interface StreamSession extends WireSession {
  sendHeaders(id: number, fields: readonly string[], endStream: boolean): void;
  closed(stream: H2ServerStream): void;
}

const NO_FIELDS: string[] = [];

/** A handler for a stream held before its relay takes it (paused): only its end matters. */
export function whileDelayed(gone: () => void): DownstreamHandler {
  return { data() {}, end() {}, drain() {}, gone };
}

export class H2ServerStream extends WireStream {
  headersSent = false;
  /** The response's END_STREAM is queued or sent. */
  responseEnded = false;
  /** The request's end was handed to the handler. */
  private requestEnded = false;
  /** Request body bytes received, held to content-length when there is one (-1: none). */
  received = 0;
  readonly expectedLength: number;
  readonly openedAt = performance.now();

  private handler: DownstreamHandler | undefined;
  private paused = false;
  /** Body received while no handler reads, or while paused. */
  private inbox: Buffer[] | undefined;
  private delivering = false;

  constructor(
    private readonly session: StreamSession,
    id: number,
    readonly headers: IncomingHttpHeaders,
    /** The SPIFFE ID the connection's handshake proved, on the mTLS listener. */
    readonly caller: string | undefined,
    recvWindow: number,
    sendWindow: number,
  ) {
    super(id, recvWindow, sendWindow);
    // requestHeaders() let no other value through.
    this.expectedLength = declaredLength(headers["content-length"])!;
  }

  /** The request has no body: it ended with its headers. */
  get endAfterHeaders(): boolean {
    return this.remoteEnded && this.received === 0 && this.inbox === undefined;
  }

  /** Hands the request body, as it comes, to `handler` (what came before it first, unless paused). */
  handle(handler: DownstreamHandler): void {
    this.handler = handler;
    this.deliver();
  }

  pause(): void {
    this.paused = true;
  }

  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    this.deliver();
  }

  // ---- from the session ----

  onData(chunk: Buffer): void {
    this.received += chunk.byteLength;
    if (this.handler === undefined || this.paused || this.inbox !== undefined) {
      (this.inbox ??= []).push(chunk);
      return;
    }
    this.session.consumed(this, chunk.byteLength);
    this.handler.data(chunk);
  }

  onEnd(): void {
    this.remoteEnded = true;
    this.deliver();
  }

  /** Reset by the peer, or its connection went. */
  onGone(): void {
    if (this.closed) return;
    this.close();
    this.handler?.gone();
  }

  protected drained(): void {
    this.handler?.drain();
  }

  private deliver(): void {
    if (this.delivering) return;
    this.delivering = true;
    try {
      while (this.handler !== undefined && !this.paused && !this.closed) {
        const inbox = this.inbox;
        if (inbox !== undefined) {
          const chunk = inbox.shift();
          if (chunk !== undefined) {
            this.session.consumed(this, chunk.byteLength);
            this.handler.data(chunk);
            continue;
          }
          this.inbox = undefined;
        }
        if (this.remoteEnded && !this.requestEnded) {
          this.requestEnded = true;
          this.handler.end();
        }
        return;
      }
    } finally {
      this.delivering = false;
    }
  }

  // ---- the response ----

  respond(headers: OutgoingHttpHeaders, endStream = false): void {
    if (this.closed || this.headersSent) return;
    this.headersSent = true;
    if (endStream) this.responseEnded = true;
    this.session.sendHeaders(this.id, outgoingFields(headers), endStream);
    if (endStream) this.sendDone();
  }

  /** False when the body is queued or the socket full: wait for the handler's `drain`. */
  write(chunk: Uint8Array): boolean {
    if (this.closed || this.responseEnded || chunk.byteLength === 0) return !this.closed;
    return this.writeBody(chunk, this.session);
  }

  /** Ends the response, with `trailers` when given (gRPC's status). */
  end(trailers?: OutgoingHttpHeaders): void {
    if (this.closed || this.responseEnded) return;
    this.responseEnded = true;
    this.endQueued = true;
    this.trailers = trailers === undefined ? undefined : outgoingFields(trailers);
    if (this.trailers?.length === 0) this.trailers = NO_FIELDS;
    this.session.flushStream(this);
  }

  /**
   * The response's last frame is written. A client still sending its request is told to
   * stop, without error (RFC 9113 §8.1), or it would wait on flow control for a window
   * nobody opens; a request body nobody read to its end (the proxy answered without it)
   * is dropped with the stream.
   */
  sendDone(): void {
    this.endQueued = false;
    if (!this.remoteEnded) this.reset(ErrorCode.NO_ERROR);
    else this.close();
  }

  /** RST_STREAM with `code`: INTERNAL_ERROR for a response cut short. */
  reset(code: number): void {
    if (this.closed) return;
    this.session.sendRst(this.id, code);
    this.close();
  }

  private close(): void {
    if (!this.markClosed()) return;
    this.inbox = undefined;
    this.session.closed(this);
  }
}
