/**
 * The upstream side of the transport seam: sends one request and returns the response
 * with its body still streaming. Today it is Bun's fetch with a pooled FetchSession per
 * destination; a raw-socket client can replace it here without touching the pipeline.
 */
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

/** The response to hand back downstream: same status and body, hop-by-hop headers dropped. */
export function relayResponse(res: Response): Response {
  const headers = forwardableHeaders(res.headers);
  return new Response(res.body, { status: res.status, statusText: res.statusText, headers });
}
