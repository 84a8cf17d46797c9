/**
 * An HTTP/2 stream answered by an HTTP/1.1 service: the inbound's translation when the
 * sidecar's own Service declares the port `protocol: http`, as Envoy downgrades calls for
 * Istio and Consul. The request goes out on the strict HTTP/1.1 client the inbound's
 * HTTP/1.1 calls use, :authority as Host; its body streams with backpressure, with its
 * Content-Length when it declared one and chunked otherwise. The response comes back as
 * HEADERS and DATA, without HTTP/1.1's connection-level fields (RFC 9113 §8.2.2).
 *
 * As in stream-relay.ts: a failure before the response head is answered by the proxy,
 * one after it resets the client's stream, so a body cut short never reads as complete;
 * a client that resets its stream, or a stream silent past the idle timeout, cancels the
 * exchange.
 */
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from "node:http2";
import { CLIENT_CLOSED_STATUS, errorParts, type ProxyFailure } from "../errors.ts";
import { proxyFailureOf, RequestBodyError, type Http1Pool } from "../transport/h1/index.ts";
import { forwardedResponse } from "./h2-headers.ts";
import type { IdleStreams, WatchedStream } from "./idle-streams.ts";
import { replyLocally } from "./local-reply.ts";
import type { RelayEnd } from "./relay-contract.ts";
import { ErrorCode } from "./wire/frames.ts";
import type { DownstreamHandler, H2ServerStream } from "./wire/server-stream.ts";

export interface Http1UpstreamOptions {
  /** Largest request body sent on; beyond it the call is refused (413) or, once answered, reset. 0: none. */
  maxBodyBytes: number;
  idle: IdleStreams;
  /** What each failure's answer says, after the cause. */
  upstreamName: string;
}

/** The request `headers` (as forwardedRequest made them) as HTTP/1.1 fields: pseudo-headers off, :authority as Host, cookie crumbs joined (RFC 9113 §8.2.3). */
export function http1Fields(headers: OutgoingHttpHeaders): Headers {
  const fields = new Headers();
  for (const name in headers) {
    if (name.charCodeAt(0) === 58 /* ":" */) continue;
    const value = headers[name];
    if (value === undefined) continue;
    if (Array.isArray(value)) {
      if (name === "cookie") fields.set(name, value.join("; "));
      else for (const v of value) fields.append(name, v);
    } else fields.set(name, String(value));
  }
  const authority = headers[":authority"];
  if (typeof authority === "string" && authority !== "") fields.set("host", authority);
  return fields;
}

/** The local service's HTTP/1.1 response head as HTTP/2 response headers: Set-Cookie kept one field per cookie, connection-level fields and those its Connection lists off, and a sidecar's answer headers. */
export function http2ResponseHeaders(res: Response): OutgoingHttpHeaders {
  const head: IncomingHttpHeaders = {};
  const listed = (res.headers.get("connection") ?? "").split(",").map((token) => token.trim().toLowerCase());
  res.headers.forEach((value, name) => {
    if (name !== "set-cookie" && !listed.includes(name)) head[name] = value;
  });
  const cookies = res.headers.getSetCookie();
  if (cookies.length > 0) head["set-cookie"] = cookies;
  // HTTP/2 holds DATA to content-length (RFC 9113 §8.1.1): a 204 has no body whatever it says (RFC 9110 §8.6),
  // and a length HTTP/1.1 repeated ("2, 2", which the strict parser let through only when every copy agrees) is said once.
  const length = head["content-length"];
  if (res.status === 204) delete head["content-length"];
  else if (length !== undefined && length.includes(",")) head["content-length"] = length.slice(0, length.indexOf(",")).trim();
  const out = forwardedResponse(head, false);
  out[":status"] = res.status;
  return out;
}

export function relayToHttp1(down: H2ServerStream, pool: Http1Pool, headers: OutgoingHttpHeaders, opts: Http1UpstreamOptions, done: (end: RelayEnd) => void): void {
  new Http1Relay(down, opts, done).start(pool, headers);
}

class Http1Relay implements DownstreamHandler {
  private readonly result: RelayEnd = { status: 0, grpcStatus: undefined, failure: undefined, limit: undefined, headAt: 0 };
  private readonly abort = new AbortController();
  private over = false;
  private received = 0;
  private watched: WatchedStream | undefined;
  /** The request body's stream, while the client sends it. */
  private body: ReadableStreamDefaultController<Uint8Array> | undefined;
  /**
   * The last piece received, held until the next or the end: a body with a Content-Length
   * is complete to the service on its last byte, so that byte waits for END_STREAM, and a
   * stream the client resets after sending it all never reaches the service whole.
   */
  private lastPiece: Buffer | undefined;
  /** Resolves a response write's wait for the client's window, or its stream's end. */
  private drained: (() => void) | undefined;
  /** A GET or HEAD: sent without a body, and refused if the client sends one (as the HTTP/1.1 listener refuses one). */
  private bodyless = false;

  constructor(
    private readonly down: H2ServerStream,
    private readonly opts: Http1UpstreamOptions,
    private readonly done: (end: RelayEnd) => void,
  ) {}

  start(pool: Http1Pool, headers: OutgoingHttpHeaders): void {
    const { down, opts } = this;
    if (opts.maxBodyBytes > 0 && Number(headers["content-length"] ?? 0) > opts.maxBodyBytes) return this.overLimit();
    this.watched = opts.idle.watch(() => this.idleOut());
    const method = String(headers[":method"]);
    // Few HTTP/1.1 servers read a GET's or a HEAD's body the same way (request-guard.ts): it is not forwarded.
    this.bodyless = method === "GET" || method === "HEAD";
    if (this.bodyless && Number(headers["content-length"] ?? 0) > 0) return this.fail("bad-request", `a ${method} request with a body is not forwarded`);
    let fields: Headers;
    try {
      fields = http1Fields(headers);
    } catch (err) {
      // A value HTTP/2 carries that an HTTP/1.1 field cannot (a character past latin1).
      return this.fail("bad-request", `a header cannot be sent as HTTP/1.1: ${(err as Error).message}`);
    }
    const request = { method, pathAndQuery: String(headers[":path"]), headers: fields, body: down.endAfterHeaders || this.bodyless ? null : this.requestBody(), signal: this.abort.signal };
    // Read to its end, so a request without a body is over once answered (the inbound may have paused it).
    down.handle(this);
    down.resume();
    pool.send(request).then(
      (res) => this.respond(res, method === "HEAD"),
      (err: Error) => this.failed(err),
    );
  }

  /** The client's DATA frames as a stream the HTTP/1.1 client reads at its own pace: the client's stream is paused while a chunk waits. */
  private requestBody(): ReadableStream<Uint8Array> {
    return new ReadableStream<Uint8Array>(
      {
        start: (controller) => {
          this.body = controller;
        },
        pull: () => {
          this.down.resume();
        },
      },
      { highWaterMark: 1 },
    );
  }

  // ---- the client's stream (DownstreamHandler) ----

  data(chunk: Buffer): void {
    if (this.bodyless && chunk.byteLength > 0) return this.endEarly("bad-request", "a GET or HEAD request with a body is not forwarded", 400);
    const body = this.body;
    if (this.over || body === undefined) return;
    this.active();
    this.received += chunk.byteLength;
    const limit = this.opts.maxBodyBytes;
    if (limit > 0 && this.received > limit) return this.overLimit();
    const previous = this.lastPiece;
    this.lastPiece = chunk;
    if (previous === undefined) return;
    body.enqueue(previous);
    if ((body.desiredSize ?? 0) <= 0) this.down.pause();
  }

  end(): void {
    if (!this.over && this.body !== undefined) {
      if (this.lastPiece !== undefined) this.body.enqueue(this.lastPiece);
      this.body.close();
    }
    this.body = undefined;
    this.lastPiece = undefined;
  }

  drain(): void {
    this.drained?.();
  }

  /** The client reset its stream, or went, before its response was over: so is the exchange. */
  gone(): void {
    this.drained?.();
    if (this.over) return;
    this.abort.abort(new Error("the client closed its stream"));
    if (this.result.headAt === 0) this.result.status = CLIENT_CLOSED_STATUS;
    this.finish();
  }

  /** Resolves when the client's stream can take more, or is gone. */
  private waitForDrain(): Promise<void> {
    return new Promise<void>((resolve) => {
      this.drained = () => {
        this.drained = undefined;
        resolve();
      };
    });
  }

  private async respond(res: Response, isHead: boolean): Promise<void> {
    const { down } = this;
    if (this.over) return void res.body?.cancel().catch(() => {});
    this.result.headAt = performance.now();
    this.result.status = res.status;
    this.active();
    const body = isHead ? null : res.body;
    down.respond(http2ResponseHeaders(res), body === null);
    if (body === null) return this.finish();
    const reader = body.getReader();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (this.over) return void reader.cancel().catch(() => {});
        if (done) break;
        this.active();
        if (!down.write(value)) await this.waitForDrain();
      }
    } catch (err) {
      if (this.over) return;
      this.result.failure = "upstream-reset";
      down.reset(ErrorCode.INTERNAL_ERROR);
      return this.finish();
    }
    if (this.over) return;
    // A client still sending its request is then told to stop (RFC 9113 §8.1: wire/server-stream.ts).
    down.end();
    this.finish();
  }

  private failed(err: Error): void {
    if (this.over) return;
    // A request the HTTP/1.1 client will not send (TypeError: a method, target, length or value
    // HTTP/1.1 forbids), or a body unlike its Content-Length, is the client's fault, not the service's.
    this.fail(err instanceof RequestBodyError || err instanceof TypeError ? "bad-request" : proxyFailureOf(err), err.message);
  }

  private active(): void {
    if (this.watched !== undefined) this.watched.lastActive = performance.now();
  }

  private overLimit(): void {
    this.endEarly("bad-request", `request body over the limit of ${this.opts.maxBodyBytes} bytes`, 413);
  }

  /** Nothing either way for the idle timeout: answered 504 before a response began, reset after. */
  private idleOut(): void {
    this.watched = undefined;
    this.endEarly("timeout", `the stream carried nothing for ${this.opts.idle.timeoutMs} ms`);
  }

  /** Ends the exchange for `failure`: the client answered (with `status`, else the failure's) before a response began, reset after. */
  private endEarly(failure: ProxyFailure, detail: string, status?: number): void {
    if (this.over) return;
    this.abort.abort(new Error(detail));
    if (this.result.headAt === 0) return this.fail(failure, detail, status);
    this.result.failure = failure;
    this.down.reset(ErrorCode.INTERNAL_ERROR);
    this.finish();
  }

  private fail(failure: ProxyFailure, detail: string, status?: number): void {
    if (this.over) return;
    this.result.failure = failure;
    const answer = errorParts(failure, `${this.opts.upstreamName}: ${detail}`);
    this.result.status = replyLocally(this.down, status === undefined ? answer : { ...answer, status }, false);
    this.finish();
  }

  private finish(): void {
    if (this.over) return;
    this.over = true;
    this.opts.idle.unwatch(this.watched);
    this.done(this.result);
  }
}
