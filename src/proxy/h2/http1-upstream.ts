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
import type { IncomingHttpHeaders, OutgoingHttpHeaders, ServerHttp2Stream } from "node:http2";
import http2 from "node:http2";
import { CLIENT_CLOSED_STATUS, errorParts, type ProxyFailure } from "../errors.ts";
import { proxyFailureOf, RequestBodyError, type Http1Pool } from "../transport/h1/index.ts";
import { forwardedResponse } from "./h2-headers.ts";
import type { IdleStreams, WatchedStream } from "./idle-streams.ts";
import { replyLocally } from "./local-reply.ts";
import { onRequestEnd, resetStream } from "./reset.ts";
import type { RelayEnd } from "./relay-contract.ts";

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

/** An HTTP/1.1 response head as HTTP/2 response headers: Set-Cookie kept one field per cookie, connection-level fields and those its Connection lists off. */
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
  const out = forwardedResponse(head);
  out[":status"] = res.status;
  return out;
}

/** Resolves when `stream` can take more, or is gone; each wait leaves no listener behind. */
function drainedOrClosed(stream: ServerHttp2Stream): Promise<void> {
  return new Promise<void>((resolve) => {
    const done = () => {
      stream.off("drain", done);
      stream.off("close", done);
      resolve();
    };
    stream.on("drain", done);
    stream.on("close", done);
  });
}

export function relayToHttp1(down: ServerHttp2Stream, pool: Http1Pool, headers: OutgoingHttpHeaders, opts: Http1UpstreamOptions, done: (end: RelayEnd) => void): void {
  new Http1Relay(down, opts, done).start(pool, headers);
}

class Http1Relay {
  private readonly end: RelayEnd = { status: 0, grpcStatus: undefined, failure: undefined, headAt: 0 };
  private readonly abort = new AbortController();
  private over = false;
  private received = 0;
  private watched: WatchedStream | undefined;

  constructor(
    private readonly down: ServerHttp2Stream,
    private readonly opts: Http1UpstreamOptions,
    private readonly done: (end: RelayEnd) => void,
  ) {}

  start(pool: Http1Pool, headers: OutgoingHttpHeaders): void {
    const { down, opts } = this;
    if (opts.maxBodyBytes > 0 && Number(headers["content-length"] ?? 0) > opts.maxBodyBytes) return this.overLimit();
    this.watched = opts.idle.watch(() => this.idleOut());
    // The client reset its stream, or went, before its response was over: so is the exchange.
    down.on("close", () => {
      if (this.over) return;
      this.abort.abort(new Error("the client closed its stream"));
      if (this.end.headAt === 0) this.end.status = CLIENT_CLOSED_STATUS;
      this.finish();
    });
    // Read to its end, so a request without a body is over once answered (the inbound may have paused it).
    if (down.endAfterHeaders) down.resume();
    const method = String(headers[":method"]);
    let fields: Headers;
    try {
      fields = http1Fields(headers);
    } catch (err) {
      // A value HTTP/2 carries that an HTTP/1.1 field cannot (a character past latin1).
      return this.fail("bad-request", `a header cannot be sent as HTTP/1.1: ${(err as Error).message}`);
    }
    const request = { method, pathAndQuery: String(headers[":path"]), headers: fields, body: down.endAfterHeaders ? null : this.requestBody(), signal: this.abort.signal };
    pool.send(request).then(
      (res) => this.respond(res, method === "HEAD"),
      (err: Error) => this.failed(err),
    );
  }

  /** The client's DATA frames as a stream the HTTP/1.1 client reads at its own pace: the client's stream is paused while a chunk waits. */
  private requestBody(): ReadableStream<Uint8Array> {
    const { down } = this;
    return new ReadableStream<Uint8Array>(
      {
        start: (controller) => {
          down.on("data", (chunk: Buffer) => {
            if (this.over) return;
            this.active();
            this.received += chunk.byteLength;
            const limit = this.opts.maxBodyBytes;
            if (limit > 0 && this.received > limit) return this.overLimit();
            controller.enqueue(chunk);
            if ((controller.desiredSize ?? 0) <= 0) down.pause();
          });
          onRequestEnd(down, () => {
            if (!this.over) controller.close();
          });
        },
        pull: () => {
          down.resume();
        },
      },
      { highWaterMark: 1 },
    );
  }

  private async respond(res: Response, isHead: boolean): Promise<void> {
    const { down } = this;
    if (this.over) return void res.body?.cancel().catch(() => {});
    this.end.headAt = performance.now();
    this.end.status = res.status;
    this.active();
    const body = isHead ? null : res.body;
    try {
      down.respond(http2ResponseHeaders(res), { endStream: body === null });
    } catch {
      // The client reset the stream meanwhile.
      void body?.cancel().catch(() => {});
      return this.finish();
    }
    if (body === null) return this.complete();
    const reader = body.getReader();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (this.over) return void reader.cancel().catch(() => {});
        if (done) break;
        this.active();
        if (!down.write(value)) await drainedOrClosed(down);
      }
    } catch (err) {
      if (this.over) return;
      this.end.failure = "upstream-reset";
      resetStream(down, `${this.opts.upstreamName}: the response body failed: ${(err as Error).message}`);
      return this.finish();
    }
    if (this.over) return;
    down.end();
    this.complete();
  }

  /** The response is over: a client still sending its request is told to stop (RFC 9113 §8.1), as stream-relay.ts does. */
  private complete(): void {
    if (!this.down.readableEnded && !this.down.destroyed) this.down.close(http2.constants.NGHTTP2_NO_ERROR);
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
    const detail = `request body over the limit of ${this.opts.maxBodyBytes} bytes`;
    this.abort.abort(new Error(detail));
    if (this.end.headAt === 0) return this.fail("bad-request", detail, 413);
    this.end.failure = "bad-request";
    resetStream(this.down, detail);
    this.finish();
  }

  /** Nothing either way for the idle timeout: answered 504 before a response began, reset after. */
  private idleOut(): void {
    this.watched = undefined;
    if (this.over) return;
    const detail = `the stream carried nothing for ${this.opts.idle.timeoutMs} ms`;
    this.abort.abort(new Error(detail));
    if (this.end.headAt === 0) return this.fail("timeout", detail);
    this.end.failure = "timeout";
    resetStream(this.down, detail);
    this.finish();
  }

  private fail(failure: ProxyFailure, detail: string, status?: number): void {
    if (this.over) return;
    this.end.failure = failure;
    const answer = errorParts(failure, `${this.opts.upstreamName}: ${detail}`);
    this.end.status = replyLocally(this.down, status === undefined ? answer : { ...answer, status }, false);
    this.finish();
  }

  private finish(): void {
    if (this.over) return;
    this.over = true;
    this.opts.idle.unwatch(this.watched);
    this.done(this.end);
  }
}
