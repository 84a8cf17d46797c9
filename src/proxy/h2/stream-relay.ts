/**
 * One HTTP/2 stream relayed to an upstream session and back: request body, response
 * headers, body and trailers, with backpressure both ways (pipe), and resets carried
 * across. Before the response head a failure is answered by the proxy (local-reply.ts);
 * after it, the client's stream is reset, as the upstream's was.
 *
 * Trailers are relayed only to a client that said it takes them (`te: trailers`, which
 * every gRPC client sends); its stream then ends with the upstream's trailers, or an
 * empty trailer section when there were none.
 */
import http2, { type ClientHttp2Session, type ClientHttp2Stream, type OutgoingHttpHeaders, type ServerHttp2Stream } from "node:http2";
import { classifyFetchError, errorParts, CLIENT_CLOSED_STATUS, type ProxyFailure } from "../errors.ts";
import { identityRefusal } from "./client-sessions.ts";
import { forwardedResponse } from "./h2-headers.ts";
import { replyLocally } from "./local-reply.ts";

const { NGHTTP2_CANCEL, NGHTTP2_INTERNAL_ERROR } = http2.constants;
const END_STREAM = 0x1;

export interface RelayEnd {
  /** The upstream's status; the proxy's own answer's; or 499 when the client left first. */
  status: number;
  /** From the response's trailers, or its trailers-only head. */
  grpcStatus: string | undefined;
  /** Set when the proxy answered or reset the stream itself. */
  failure: ProxyFailure | undefined;
  /** performance.now() when the response head arrived; 0 without one. */
  headAt: number;
}

export interface RelayOptions {
  /** Longest from sending until the response head; 0: none. */
  timeoutMs: number;
  /** Failures are answered with a gRPC status. */
  grpc: boolean;
  /** Largest request body sent on, in bytes; beyond it the call is refused (413) or, once answered, reset. 0: none. */
  maxBodyBytes: number;
  /** The client sent `te: trailers`: the response's trailers are relayed to it. */
  takesTrailers: boolean;
  /** What each failure's answer says, after the cause. */
  upstreamName: string;
}

export function relayStream(down: ServerHttp2Stream, session: ClientHttp2Session, headers: OutgoingHttpHeaders, opts: RelayOptions, done: (end: RelayEnd) => void): void {
  const end: RelayEnd = { status: 0, grpcStatus: undefined, failure: undefined, headAt: 0 };
  let over = false;
  let timer: Timer | undefined;
  const finish = () => {
    if (over) return;
    over = true;
    clearTimeout(timer);
    done(end);
  };
  const fail = (failure: ProxyFailure, detail: string, status?: number) => {
    end.failure = failure;
    const answer = errorParts(failure, `${opts.upstreamName}: ${detail}`);
    end.status = replyLocally(down, status === undefined ? answer : { ...answer, status }, opts.grpc);
    finish();
  };
  const limit = opts.maxBodyBytes;
  const tooLarge = `request body over the limit of ${limit} bytes`;
  if (limit > 0 && Number(headers["content-length"] ?? 0) > limit) {
    fail("bad-request", tooLarge, 413);
    return void down.close(NGHTTP2_CANCEL);
  }
  let up: ClientHttp2Stream;
  try {
    up = session.request(headers);
  } catch (err) {
    return fail("connect-failure", (err as Error).message);
  }
  if (opts.timeoutMs > 0)
    timer = setTimeout(() => {
      up.close(NGHTTP2_CANCEL);
      fail("timeout", `no response within ${opts.timeoutMs} ms`);
    }, opts.timeoutMs);
  if (limit === 0) down.pipe(up);
  else sendBounded(down, up, limit, () => {
    // Refused before the chunk that crossed the limit went on; nothing more of it is read.
    up.close(NGHTTP2_CANCEL);
    if (end.headAt === 0) fail("bad-request", tooLarge, 413);
    else {
      end.failure = "bad-request";
      finish();
    }
    down.close(NGHTTP2_CANCEL);
  });

  let trailers: OutgoingHttpHeaders | undefined;
  up.on("response", (head, flags) => {
    if (over) return;
    clearTimeout(timer);
    end.headAt = performance.now();
    end.status = Number(head[":status"]);
    const out = forwardedResponse(head);
    if (flags & END_STREAM) {
      end.grpcStatus = head["grpc-status"] as string | undefined;
      down.respond(out, { endStream: true });
      return finish();
    }
    down.respond(out, { waitForTrailers: opts.takesTrailers });
    up.pipe(down);
  });
  up.on("trailers", (t) => {
    end.grpcStatus = t["grpc-status"] as string | undefined;
    trailers = forwardedResponse(t);
  });
  down.on("wantTrailers", () => {
    if (trailers !== undefined) down.sendTrailers(trailers);
    else down.sendTrailers({});
  });
  up.on("end", () => {
    if (end.headAt !== 0) finish();
  });
  up.on("error", (err) => {
    if (over) return;
    if (end.headAt === 0) {
      const refused = identityRefusal(session);
      const failure = refused !== undefined ? "peer-identity" : classifyFetchError(err);
      return fail(failure, refused?.message ?? err.message);
    }
    end.failure = "upstream-reset";
    down.close(NGHTTP2_INTERNAL_ERROR);
    finish();
  });
  up.on("close", () => {
    if (over) return;
    if (end.headAt === 0) return fail("upstream-reset", `the stream was reset (code ${up.rstCode})`);
    // Reset after its head: the client's stream is reset the same way.
    end.failure = "upstream-reset";
    down.close(up.rstCode || NGHTTP2_INTERNAL_ERROR);
    finish();
  });
  // The client reset its stream, or went: so is the upstream's.
  down.on("close", () => {
    if (!up.closed) up.close(NGHTTP2_CANCEL);
    if (over) return;
    if (end.headAt === 0) end.status = CLIENT_CLOSED_STATUS;
    finish();
  });
}

/** The request body to `up`, as pipe() would, but checked before each chunk goes: `overLimit` runs instead of sending the one that crosses `limit`. */
function sendBounded(down: ServerHttp2Stream, up: ClientHttp2Stream, limit: number, overLimit: () => void): void {
  let received = 0;
  down.on("data", (chunk: Buffer) => {
    received += chunk.byteLength;
    if (received > limit) {
      down.removeAllListeners("data");
      return overLimit();
    }
    if (!up.write(chunk)) down.pause();
  });
  up.on("drain", () => down.resume());
  down.on("end", () => up.end());
}
