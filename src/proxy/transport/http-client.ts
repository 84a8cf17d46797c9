/**
 * The upstream side of the transport seam: sends one request and returns the response
 * with its body still streaming. Today it is Bun's fetch with a pooled FetchSession per
 * destination; a raw-socket client can replace it here without touching the pipeline.
 */
import { errorResponse } from "../errors.ts";
import { forwardableHeaders } from "../headers.ts";

export interface UpstreamRequest {
  method: string;
  url: string;
  headers: Headers;
  body: ReadableStream<Uint8Array> | null;
  signal?: AbortSignal;
}

export type Send = (req: UpstreamRequest) => Promise<Response>;

export function sender(session: Bun.FetchSession | undefined): Send {
  const doFetch = session ? session.fetch : fetch;
  return (req) => {
    // fetch would otherwise advertise compression the client never asked for and
    // then hand the client bytes it cannot decode (we relay bodies undecoded).
    if (!req.headers.has("accept-encoding")) req.headers.set("accept-encoding", "identity");
    return doFetch(req.url, {
      method: req.method,
      headers: req.headers,
      body: req.body,
      redirect: "manual",
      decompress: false,
      signal: req.signal,
      // @ts-expect-error Bun's streaming request bodies need half duplex
      duplex: "half",
    });
  };
}

/**
 * Why an upstream response must not be relayed, if it must not. fetch reads a response
 * with both Content-Length and Transfer-Encoding as chunked and keeps the connection
 * pooled; RFC 9112 §6.3 calls such a message a likely smuggling attempt.
 */
export function responseFramingProblem(res: Response): string | undefined {
  if (res.headers.has("transfer-encoding") && res.headers.has("content-length"))
    return "upstream response has both Content-Length and Transfer-Encoding";
  return undefined;
}

/**
 * The response to hand back downstream: same status and body, hop-by-hop headers dropped.
 * A response with ambiguous framing becomes a 502 instead; its body is cancelled and the
 * idle connections of `pool` are closed, so the connection it came on is not reused
 * (fetch would otherwise pool it; closing the pool is the only handle JS has on it).
 */
export function relayResponse(res: Response, pool?: { close(): void }): Response {
  const problem = responseFramingProblem(res);
  if (problem) {
    pool?.close();
    void res.body?.cancel().then(
      () => pool?.close(),
      () => pool?.close(),
    );
    return errorResponse("upstream-reset", problem);
  }
  const headers = forwardableHeaders(res.headers);
  return new Response(res.body, { status: res.status, statusText: res.statusText, headers });
}
