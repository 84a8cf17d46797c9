/**
 * One downstream HTTP/1.1 connection on a raw Bun socket (plain or TLS) or a stream of a
 * mesh-mux session (../mux): requests are
 * parsed strictly (../h1/request-parse.ts), one at a time in arrival order (pipelined
 * ones wait, with reading paused once a little is buffered), each handed to the handler
 * with a Responder and, when it has one, its body as a BodySource. Anything malformed is
 * answered with a 4xx and the connection closed: after a framing error nobody can say
 * where the next request starts. Writing to the client, and the connection's end, are
 * its base class's (downstream-output.ts).
 */
import type { ByteSocket } from "../byte-socket.ts";
import { RequestBodyError } from "../h1/errors.ts";
import { findRequestHeadEnd, parseRequestHead, RequestHeadError, type RequestHead } from "../h1/request-parse.ts";
import { DownstreamBody, type BodyReader } from "./request-body.ts";
import { Responder, type ResponderHost } from "./responder.ts";
import { IdleWatch } from "./idle-watch.ts";
import { CONNECT_ESTABLISHED, startsWithH2Preface, TLS_HANDSHAKE_BYTE } from "./connection-start.ts";
import { INTERNAL_ERROR, type ErrorParts } from "../../errors.ts";
import { DownstreamOutput } from "./downstream-output.ts";

export interface ServerRequest {
  head: RequestHead;
  /** Holds the head as received, at head.start..head.end (socket reads, never written to). */
  bytes: Buffer;
  body: DownstreamBody | null;
  /** The SPIFFE ID the TLS handshake proved, on a mutual-TLS listener. */
  peer: string | undefined;
}

export interface ConnectionHandler {
  request(req: ServerRequest, res: Responder): void;
  /** Refused before the handler: malformed, too large. `reason` is a fixed metric label. */
  refused(reason: string): void;
  /** A WebSocket upgrade: the handler takes the connection over, starting with `initial` (the request's bytes and what followed). */
  upgrade(conn: ServerConnection, initial: Uint8Array): void;
  /**
   * Outbound only: a connection that opened with CONNECT (connection-start.ts); undefined
   * accepts it, and what follows is read as a new connection; an answer refuses it.
   */
  connect?(head: RequestHead): ErrorParts | undefined;
  /** A connection that opened with the HTTP/2 preface: the handler takes it over, starting with `initial` (the preface and what followed). */
  http2?(conn: ServerConnection, initial: Uint8Array): void;
  /** Asked before `upgrade`: an answer refuses the upgrade (counted by the handler) and closes the connection after it. */
  refuseUpgrade?(head: RequestHead, peer: string | undefined): ErrorParts | undefined;
}

export interface ConnectionLimits {
  maxBodyBytes: number;
  /** The idle timer's period: a connection unused for one to two of them closes (idle-watch.ts). */
  idleTimeoutS: number;
}

/** Pipelined bytes held while a request is in flight before reading pauses. */
const MAX_PIPELINED_BYTES = 64 * 1024;
/** Heads up to this size are remembered between requests: an idle connection holds at most this much. */
const REMEMBERED_HEAD_BYTES = 2048;
const CONTINUE = "HTTP/1.1 100 Continue\r\n\r\n";

export class ServerConnection extends DownstreamOutput implements ResponderHost, BodyReader {
  peer: string | undefined;
  /** Set once the connection is usable (after the TLS peer check, on mTLS). */
  ready = false;
  /** Its index in its listener's list of connections (SlotList). */
  slot = -1;
  minor: 0 | 1 = 1;
  closing = false;
  /** Another owner has the socket (a WebSocket tunnel): bytes go to `tunnel`. */
  tunnel: ((chunk: Uint8Array) => void) | undefined;
  onTunnelDrain: (() => void) | undefined;
  onTunnelClose: (() => void) | undefined;
  /** Asks the tunnel's protocol to end gracefully (HTTP/2: GOAWAY); unset where it has no way to. */
  onTunnelRetire: (() => void) | undefined;

  /**
   * Bytes read and not yet used: pending[pendingAt..]. An offset, not a view: a view of a
   * socket read makes JSC materialize its ArrayBuffer, and a body or a pipelined request
   * follows a head in the same read all the time.
   */
  private pending: Buffer | undefined;
  private pendingAt = 0;
  /** Index in `pending` before which an incomplete head was already checked. */
  private scanFrom = 0;
  /** The last request's head, when small: the next one's repeated values are its strings (parseRequestHead). */
  private lastHead: RequestHead | undefined;
  private active: Responder | undefined;
  private body: DownstreamBody | null = null;
  private paused = 0;
  private readonly idleWatch = new IdleWatch();
  private parsing = false;
  /** A CONNECT was accepted: the bytes after it are a new connection's, and no second CONNECT is. */
  private connected = false;

  constructor(
    socket: ByteSocket,
    private readonly handler: ConnectionHandler,
    private readonly limits: ConnectionLimits,
    private readonly onClosed: (conn: ServerConnection) => void,
  ) {
    super(socket);
  }

  /** Idle: no request in progress and nothing buffered. */
  get idle(): boolean {
    return this.active === undefined && this.pending === undefined && this.tunnel === undefined;
  }

  // ---- reading ----

  onData(chunk: Buffer): void {
    if (this.closed || !this.ready) return;
    this.idleWatch.stirred = true;
    if (this.tunnel !== undefined) return this.tunnel(chunk);
    if (this.body !== null && !this.body.done) {
      if (this.body.failed) return; // the connection is closing; nothing more is read as a request
      const used = this.body.feed(chunk);
      if (this.body.failed) return this.bodyFailed();
      if (used === chunk.byteLength) return;
      this.buffer(chunk, used);
    } else this.buffer(chunk, 0);
    if (this.active !== undefined || this.out.length > 0) {
      if (this.pending!.byteLength - this.pendingAt > MAX_PIPELINED_BYTES) this.pauseReading();
      return;
    }
    this.parseNext();
  }

  /** Adds chunk[from..] to what is pending. */
  private buffer(chunk: Buffer, from: number): void {
    if (this.pending === undefined) {
      this.pending = chunk;
      this.pendingAt = from;
      return;
    }
    // A head split over reads: join what is left, renumbering the checked mark.
    const rest = this.pending.subarray(this.pendingAt);
    this.pending = Buffer.concat([rest, from === 0 ? chunk : chunk.subarray(from)]);
    this.scanFrom = Math.max(0, this.scanFrom - this.pendingAt);
    this.pendingAt = 0;
  }

  /**
   * Parses and dispatches buffered requests until one is in flight or more bytes are
   * needed. Not while the socket holds back part of a response: a client that pipelines
   * and does not read would otherwise have every response queued here, without bound.
   */
  private parseNext(): void {
    if (this.parsing) return;
    this.parsing = true;
    try {
      while (this.active === undefined && this.out.length === 0 && this.pending !== undefined && !this.closed && !this.closing && this.tunnel === undefined) {
        const buf = this.pending;
        const from = this.pendingAt;
        let end: number;
        let head: RequestHead;
        try {
          if (this.connected && this.idleWatch.heads === 0 && buf[from] === TLS_HANDSHAKE_BYTE) {
            this.handler.refused("connect-tls");
            return this.shutdown(false);
          }
          end = findRequestHeadEnd(buf, from, this.scanFrom);
          if (end < 0) {
            this.scanFrom = buf.byteLength;
            return;
          }
          if (this.idleWatch.heads === 0 && this.handler.http2 !== undefined && startsWithH2Preface(buf, from)) {
            this.pending = undefined;
            return this.handler.http2(this, from === 0 ? buf : buf.subarray(from));
          }
          // A CONNECT is taken only as an outbound connection's first request (connection-start.ts).
          const connectAllowed = this.idleWatch.heads === 0 && !this.connected && this.handler.connect !== undefined;
          head = parseRequestHead(buf, from, end, this.lastHead, connectAllowed);
          // The parser refuses a CONNECT it was not allowed to take.
          if (connectAllowed && head.method === "CONNECT") {
            this.consume(buf, end);
            const refusal = this.handler.connect!(head);
            if (refusal !== undefined) return this.answerAndClose(refusal);
            this.connected = true;
            this.write(CONNECT_ESTABLISHED);
            continue;
          }
        } catch (err) {
          if (err instanceof RequestHeadError) return this.refuse(err.status, err.reason, err.message);
          throw err;
        }
        // An idle connection keeps at most this much of its last head alive.
        this.lastHead = end - from <= REMEMBERED_HEAD_BYTES ? head : undefined;
        this.consume(buf, end);
        this.dispatch(head, buf, from);
      }
    } finally {
      this.parsing = false;
    }
  }

  /** What is pending starts at `end` of `buf` now. */
  private consume(buf: Buffer, end: number): void {
    this.scanFrom = 0;
    if (end < buf.byteLength) this.pendingAt = end;
    else this.pending = undefined;
  }

  /** `buf[from..]` is this request and everything read after it. */
  private dispatch(head: RequestHead, buf: Buffer, from: number): void {
    this.idleWatch.heads++;
    this.minor = head.minor;
    if (!head.keepAlive) this.closing = true;
    if (head.websocket) {
      this.pending = undefined;
      const refusal = this.handler.refuseUpgrade?.(head, this.peer);
      if (refusal !== undefined) return this.answerAndClose(refusal);
      this.handler.upgrade(this, from === 0 ? buf : buf.subarray(from));
      return;
    }
    if (head.contentLength > this.limits.maxBodyBytes)
      return this.refuse(413, "body-too-large", `request body of ${head.contentLength} bytes is over the limit of ${this.limits.maxBodyBytes}`);
    const res = new Responder(this, head.method === "HEAD");
    this.active = res;
    let body: DownstreamBody | null = null;
    if (head.contentLength > 0 || head.chunked) {
      body = new DownstreamBody(this, head.contentLength, head.chunked, this.limits.maxBodyBytes);
      this.body = body;
      const rest = this.pending;
      const at = this.pendingAt;
      this.pending = undefined;
      if (rest !== undefined) {
        const used = body.feed(rest, at, rest.byteLength);
        if (at + used < rest.byteLength) {
          this.pending = rest;
          this.pendingAt = at + used;
        }
      }
      if (body.failed) return this.bodyFailed();
      if (head.expectContinue && !body.done && rest === undefined) this.write(CONTINUE);
    } else this.body = null;
    try {
      this.handler.request({ head, bytes: buf, body, peer: this.peer }, res);
    } catch {
      // A bug must not leave the client waiting, nor show it anything of the proxy.
      res.respond(INTERNAL_ERROR.status, INTERNAL_ERROR.headers, INTERNAL_ERROR.body);
    }
  }

  /** Answers a request that cannot be forwarded and closes the connection after it. */
  private refuse(status: number, reason: string, detail: string, failure = "bad-request"): void {
    this.handler.refused(reason);
    this.socket.refusedPeer?.();
    this.answerAndClose({ status, headers: { "content-type": "text/plain; charset=utf-8", "x-mesh-error": failure }, body: `mesh: ${failure}: ${detail}\n` });
  }

  private answerAndClose(answer: ErrorParts): void {
    this.closing = true;
    this.pending = undefined;
    const res = this.active ?? new Responder(this, false);
    this.active = res;
    if (res.headSent) return this.abort(res);
    res.respond(answer.status, answer.headers, answer.body);
  }

  /** The request body broke (malformed chunk, over the limit): its pump fails; the client gets a 4xx if nothing was sent yet. */
  private bodyFailed(): void {
    const body = this.body!;
    const status = body.failStatus;
    this.refuse(status, status === 413 ? "body-too-large" : "body-framing", status === 413 ? "request body over the size limit" : "malformed chunked request body");
  }

  pauseReading(): void {
    if (this.paused++ === 0 && !this.closed) this.socket.pause();
  }

  resumeReading(): void {
    if (this.paused > 0 && --this.paused === 0 && !this.closed) this.socket.resume();
  }

  // ---- writing ----

  onDrain(): void {
    this.idleWatch.onDrain();
    if (!this.writeQueued()) return;
    if (this.endWhenFlushed) return this.shutdown(false);
    if (this.tunnel !== undefined) return this.onTunnelDrain?.();
    if (this.active === undefined) return this.parseNext();
    this.active.drained();
  }

  endsAfterResponse(closeDelimited: boolean): boolean {
    // A body that will not be read to its end leaves nowhere to start the next request;
    // nor does a response body that only the close ends (an HTTP/1.0 client's chunked one).
    if (closeDelimited || (this.body !== null && !this.body.done && !this.body.discardable)) this.closing = true;
    return this.closing;
  }

  responseDone(res: Responder): void {
    if (res !== this.active) return;
    this.active = undefined;
    this.idleWatch.stirred = true;
    // The response went out before the request body was all here (the service answered
    // without reading it): the rest is read and dropped, as its framing says where it
    // ends, so the connection stays usable; a body too large to drain closes it.
    if (this.body !== null && !this.body.done) {
      if (this.body.discardable) this.body.discard();
      else this.closing = true;
    } else this.body = null;
    if (this.closing) return this.endGracefully();
    if (this.paused > 0) this.resumeReading();
    this.parseNext();
  }

  abort(res: Responder): void {
    if (res === this.active) this.shutdown(true);
  }

  /** Closes once the current response is written (drain); at once when idle. A tunnel is asked to end, if it can be. */
  close(): void {
    this.closing = true;
    if (this.tunnel !== undefined) this.onTunnelRetire?.();
    else if (this.active === undefined) this.endGracefully();
  }

  /** The tunnel's other side closed: end once what it sent is written. */
  endTunnel(): void {
    this.tunnel = undefined;
    this.closing = true;
    this.endGracefully();
  }

  // ---- lifecycle ----

  /** The idle timer fired (see idle-watch.ts). */
  onTimeout(): void {
    if (this.closed) return;
    const busy = this.active !== undefined || this.tunnel !== undefined;
    const verdict = this.idleWatch.fire({ busy, blocked: this.out.length > 0, partialHead: this.pending !== undefined });
    if (verdict === "keep") this.socket.timeout(this.limits.idleTimeoutS);
    else if (verdict === "head-timeout") this.refuse(408, "head-timeout", `the request head did not arrive within ${this.limits.idleTimeoutS} s`, "request-timeout");
    else this.shutdown(verdict === "reset");
  }

  onClose(): void {
    if (this.closed) return;
    this.closed = true;
    this.finish();
  }

  protected finish(): void {
    this.out = [];
    this.held = undefined;
    this.pending = undefined;
    this.body?.fail(new RequestBodyError("the client closed the connection before the request body was complete"));
    this.body = null;
    this.active?.gone();
    this.active = undefined;
    if (this.tunnel !== undefined) {
      this.tunnel = undefined;
      this.onTunnelClose?.();
    }
    this.onClosed(this);
  }
}
