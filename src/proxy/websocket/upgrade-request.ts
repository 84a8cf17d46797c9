/**
 * What of a client's upgrade request crosses the proxy. The proxy terminates the
 * WebSocket at each hop, so the per-connection handshake fields (key, version,
 * extensions) are the hop's own; the subprotocol offer and ordinary headers pass on,
 * after the same hop-by-hop and identity stripping as HTTP.
 */
import { forwardableHeaders } from "../headers.ts";

/** 16 bytes in base64: 22 characters and the padding. */
const WEBSOCKET_KEY = /^[A-Za-z0-9+/]{22}==$/;

const HANDSHAKE = ["sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions", "sec-websocket-accept"];

/** A request asking for a WebSocket (RFC 6455 §4.1); anything else takes the HTTP path. */
export function isWebSocketUpgrade(req: Request): boolean {
  return req.method === "GET" && /(^|,)\s*websocket\s*(,|$)/i.test(req.headers.get("upgrade") ?? "");
}

/** Checked before opening anything upstream, so junk never costs a connection. */
export function handshakeProblem(req: Request): string | undefined {
  if (!/(^|,)\s*upgrade\s*(,|$)/i.test(req.headers.get("connection") ?? "")) return "Connection does not list Upgrade";
  const key = req.headers.get("sec-websocket-key");
  if (!key) return "missing Sec-WebSocket-Key";
  // RFC 6455 §4.1: base64 of 16 bytes. Bun's upgrade refuses any other key, but only after the upstream was opened.
  if (!WEBSOCKET_KEY.test(key.trim())) return "Sec-WebSocket-Key must be 16 bytes in base64";
  if (req.headers.get("sec-websocket-version") !== "13") return "Sec-WebSocket-Version must be 13";
  return undefined;
}

/** Headers for the upstream handshake. Sec-WebSocket-Protocol is kept verbatim: the upstream chooses. */
export function upstreamHeaders(req: Request): Headers {
  const headers = forwardableHeaders(req.headers);
  for (const name of HANDSHAKE) headers.delete(name);
  return headers;
}

export function pathAndQuery(req: Request): string {
  const url = new URL(req.url);
  return url.pathname + url.search;
}
