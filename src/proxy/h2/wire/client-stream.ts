/**
 * One request stream of a client session (client-session.ts), as a relay sees it: the
 * request's body written (held until the session opens the stream, then within the
 * peer's window), its end, and the response handed to one handler: head, body (held
 * within our window while paused), trailers, end, or how it failed.
 */
import type { IncomingHttpHeaders } from "node:http2";
import { ErrorCode } from "./frames.ts";
import { WireStream, type WireSession } from "./wire-stream.ts";

/** Why a stream failed, as its relay decides whether another try may follow. */
export interface UpstreamFailure {
  /**
   * "refused-stream": the peer refused it unprocessed (RST_STREAM REFUSED_STREAM), as an
   * overloaded server does; "not-taken": it was never processed because its session was
   * ending (past the peer's GOAWAY, or on a session closing or out of stream ids);
   * "connect-failure" and "peer-identity": its session never connected, so it was never
   * sent; "reset": it was reset, or its connection failed, once sent.
   */
  kind: "refused-stream" | "not-taken" | "connect-failure" | "peer-identity" | "reset";
  /** The RST_STREAM code, for a reset by the peer. */
  code: number;
  message: string;
}

/** Who reads a stream's response and is told when its request may go on. */
export interface UpstreamHandler {
  /** The response head; `endStream`: the head is the whole response (a gRPC trailers-only answer). */
  response(headers: IncomingHttpHeaders, endStream: boolean): void;
  data(chunk: Buffer): void;
  /** The response's trailers; `end` follows. */
  trailers(headers: IncomingHttpHeaders): void;
  /** The response is complete. */
  end(): void;
  /** A write that returned false has been taken: more may go. */
  drain(): void;
  /** The stream is over before its response was complete. */
  failed(failure: UpstreamFailure): void;
}

/** What a stream asks of its session. */
export interface ClientStreamSession extends WireSession {
  /** The stream is over: forgotten, and its place given to a waiting one. */
  streamClosed(stream: H2ClientStream): void;
  /** The stream was cancelled: it counts against the session (client-session.ts). */
  cancelled(stream: H2ClientStream): void;
}

export class H2ClientStream extends WireStream {
  /** The response head arrived. */
  answered = false;
  /** HEADERS sent: the stream has an id and exists at the peer. */
  opened = false;
  /** A HEAD request: its response has no body whatever its content-length says. */
  readonly headRequest: boolean;
  /** The response's content-length (-1: none), and its body bytes so far. */
  expectedLength = -1;
  received = 0;
  /** Informational (1xx) heads before the response. */
  informational = 0;
  /** The response is all here (END_STREAM), some of it still held for a paused reader: the session is done with it. */
  private detached = false;
  private paused = false;
  /** Response body received while paused. */
  private inbox: Buffer[] | undefined;
  /** The request's END_STREAM is written. */
  private ended = false;
  /** The response's end was handed to the handler. */
  private responseDone = false;

  constructor(
    private readonly session: ClientStreamSession,
    /** The request head, sent when the session opens the stream. */
    readonly fields: string[],
    readonly handler: UpstreamHandler,
  ) {
    super(0, 0, 0);
    const method = fields.indexOf(":method");
    this.headRequest = method >= 0 && fields[method + 1] === "HEAD";
  }

  /** Given its id and windows once the session sends its HEADERS. */
  open(id: number, recvWindow: number, sendWindow: number): void {
    (this as { id: number }).id = id;
    this.recvWindow = recvWindow;
    this.sendWindow = sendWindow;
    this.opened = true;
  }

  // ---- the request ----

  /** False when the body is held (not yet opened, the peer's window shut, or the socket full): wait for `drain`. */
  write(chunk: Uint8Array): boolean {
    if (this.closed || this.endQueued || chunk.byteLength === 0) return !this.closed;
    return this.writeBody(chunk, this.opened ? this.session : undefined);
  }

  end(): void {
    if (this.closed || this.endQueued) return;
    this.endQueued = true;
    if (this.opened) this.session.flushStream(this);
  }

  /**
   * Gives the stream up (nothing if it was never sent); the handler hears nothing more.
   * RST_STREAM CANCEL once the request was sent whole; INTERNAL_ERROR while its body was
   * still going, since Bun's node:http2 server (measured, 1.4.5) tells its handler "end"
   * for a stream reset with CANCEL or NO_ERROR, and a service would take the cut body for
   * a whole one.
   */
  cancel(): void {
    if (this.closed) return;
    if (this.opened) {
      this.session.sendRst(this.id, this.ended ? ErrorCode.CANCEL : ErrorCode.INTERNAL_ERROR);
      this.session.cancelled(this);
    }
    this.close();
  }

  sendDone(): void {
    this.endQueued = false;
    this.ended = true;
    this.closeIfOver();
  }

  protected drained(): void {
    this.handler.drain();
  }

  // ---- the response ----

  pause(): void {
    this.paused = true;
  }

  /** Hands on what was held, until the reader pauses again; then the response's end, if it came. */
  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    for (let chunk = this.inbox?.shift(); chunk !== undefined; chunk = this.inbox?.shift()) {
      this.session.consumed(this, chunk.byteLength);
      this.handler.data(chunk);
      if (this.paused || this.closed) return;
    }
    this.inbox = undefined;
    if (this.remoteEnded && !this.responseDone && !this.closed) this.responseEnded();
  }

  onHead(headers: IncomingHttpHeaders, endStream: boolean): void {
    this.answered = true;
    if (endStream) this.remoteEnded = this.responseDone = true;
    this.handler.response(headers, endStream);
    if (endStream) this.closeIfOver();
  }

  onData(chunk: Buffer): void {
    if (this.paused) {
      (this.inbox ??= []).push(chunk);
      return;
    }
    this.session.consumed(this, chunk.byteLength);
    this.handler.data(chunk);
  }

  onTrailers(headers: IncomingHttpHeaders): void {
    this.handler.trailers(headers);
  }

  /** The response's END_STREAM arrived. */
  onEnd(): void {
    this.remoteEnded = true;
    if (!this.paused) this.responseEnded();
  }

  private responseEnded(): void {
    this.responseDone = true;
    this.handler.end();
    this.closeIfOver();
  }

  /**
   * The peer reset it, or its session failed. A response that arrived whole and waits for
   * a paused reader is not thrown away (RFC 9113 §8.1: a server may reset a stream it has
   * answered, or close the connection): only the session lets go of it.
   */
  onFailed(failure: UpstreamFailure): void {
    if (this.closed) return;
    if (this.remoteEnded) {
      if (!this.detached) this.session.streamClosed(this);
      this.detached = true;
      return;
    }
    this.close();
    this.handler.failed(failure);
  }

  /**
   * Over once the response is: a request still being sent when the peer has answered in
   * full (a service that answers without reading it all, RFC 9113 §8.1) is ended there,
   * reset as a cut body is (see cancel()), and the rest of its body dropped.
   */
  private closeIfOver(): void {
    if (!this.responseDone || this.closed) return;
    if (!this.ended && this.opened && !this.detached) this.session.sendRst(this.id, ErrorCode.INTERNAL_ERROR);
    this.close();
  }

  private close(): void {
    if (!this.markClosed()) return;
    this.inbox = undefined;
    this.session.streamClosed(this);
  }
}
