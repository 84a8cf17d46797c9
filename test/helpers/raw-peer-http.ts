/**
 * HTTP/1.1 by hand on a RawPeer (raw-peer.ts): requests in turn on one kept-alive TLS
 * connection opened with a certificates directory's credentials, each answer read as it comes,
 * and the connection's close seen as the far end made it.
 *
 *   const link = await connectWithCerts(port, certsDir);
 *   const answer = await httpRequest(link, { path: "/", host: "payments" }); // undefined: closed first
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parseResponses, type HttpResponse } from "./http-responses.ts";
import type { ClientTls } from "./raw-http.ts";
import { connectRawPeer, type RawPeer, type RawPeerOptions } from "./raw-peer.ts";

/** The credentials in a certificates directory (chain.pem, key.pem), as a sidecar's --certs-dir or `mesh ca issue --out` holds them; no CA: the server's certificate is not checked. */
export function certsDirTls(dir: string): Partial<ClientTls> {
  return { cert: readFileSync(join(dir, "chain.pem"), "utf8"), key: readFileSync(join(dir, "key.pem"), "utf8") };
}

/**
 * A TLS RawPeer proven by the certificate in `dir`; no half-open: the far end's FIN closes it,
 * as a node:tls client's does, so `closed` (and `closedAt`) tell when the far end closed it.
 * A refused handshake is a closed peer, as connectRawPeer's failed connect is.
 */
export function connectWithCerts(port: number, dir: string, opts: Omit<RawPeerOptions, "tls"> = {}): Promise<RawPeer> {
  return connectRawPeer(port, { halfOpen: false, ...opts, tls: certsDirTls(dir) });
}

export interface HttpAsk {
  /** Default GET. */
  method?: string;
  path: string;
  host: string;
  /** More header lines, after host, as given (content-length is added for a body). */
  headers?: Record<string, string>;
  body?: string;
}

export interface HttpAnswer {
  /** The status line, without its CRLF. */
  statusLine: string;
  status: number;
  /** The header block, status line included, without the blank line that ends it. */
  head: string;
  /** As latin1 text; a chunked body decoded. */
  body: string;
}

/**
 * Sends `ask` on `p` and waits for its whole answer (framed by content-length or chunked; one
 * with neither is whole with its head, and has no body: see http-responses.ts); undefined if the
 * connection closed (or the far end ended it) before one came, or `ms` passed. What the peer
 * received before the call is not read; an answer in parts is read from all of them.
 */
export async function httpRequest(p: RawPeer, ask: HttpAsk, ms = 5000): Promise<HttpAnswer | undefined> {
  if (p.closed || p.ended) return undefined;
  const from = p.bytes.byteLength;
  const body = ask.body === undefined ? undefined : Buffer.from(ask.body);
  const lines = [`${ask.method ?? "GET"} ${ask.path} HTTP/1.1`, `host: ${ask.host}`, ...Object.entries(ask.headers ?? {}).map(([k, v]) => `${k}: ${v}`)];
  if (body !== undefined) lines.push(`content-length: ${body.byteLength}`);
  const head = Buffer.from(lines.join("\r\n") + "\r\n\r\n", "latin1");
  const deadline = Date.now() + ms;
  await p.writeAll(body === undefined ? head : Buffer.concat([head, body]), ms);
  let answer: HttpResponse | undefined;
  // The answer is looked for before the close: its last bytes may have come with it.
  await p.until((q) => (answer = parseResponses(q.bytes.subarray(from))[0]) !== undefined || q.closed || q.ended, deadline - Date.now());
  return answer && { statusLine: answer.head.split("\r\n")[0]!, status: answer.status, head: answer.head, body: answer.body.toString("latin1") };
}
