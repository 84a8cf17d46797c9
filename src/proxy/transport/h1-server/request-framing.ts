/** How a relayed request's body is framed upstream: as the client framed it (its length, or chunked). */
import type { RequestFraming } from "../h1/request-head.ts";
import type { RequestHead } from "../h1/request-parse.ts";

const NONE: RequestFraming = { kind: "none" };
const CHUNKED: RequestFraming = { kind: "chunked" };

export function requestFraming(head: RequestHead): RequestFraming {
  if (head.chunked) return CHUNKED;
  return head.contentLength > 0 ? { kind: "length", length: head.contentLength } : NONE;
}
