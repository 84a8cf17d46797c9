/**
 * The response handed back downstream: the upstream's status and streaming body, with
 * hop-by-hop headers dropped. Framing was already checked by the HTTP/1.1 client, which
 * refuses an ambiguous response before it gets here.
 */
import { forwardableHeaders } from "./headers.ts";

export function relayResponse(res: Response): Response {
  return new Response(res.body, { status: res.status, statusText: res.statusText, headers: forwardableHeaders(res.headers) });
}
