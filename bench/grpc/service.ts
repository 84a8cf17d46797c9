/**
 * The gRPC-shaped service behind every topology of `npm run bench:grpc`, in its own
 * process: a node:http2 h2c server (Bun's own server has no trailers, which gRPC needs).
 * Each POST whose body is one well-formed message is answered as a unary gRPC call is:
 * `:status 200`, `content-type: application/grpc`, one 100-byte length-prefixed message,
 * then the trailers `grpc-status: 0`. A malformed call gets HTTP 400, which h2load counts
 * as a failure (a gRPC status would ride on HTTP 200 and count as a success).
 *
 * Every header it sends is marked never-indexed (HPACK §6.2.3). nginx's gRPC proxy keeps
 * no HPACK dynamic table: it advertises SETTINGS_HEADER_TABLE_SIZE 0 to every upstream and
 * fails any response that refers to the table ("upstream sent invalid http2 table index").
 * Bun 1.4.5's node:http2 encoder ignores that setting (and maxDeflateDynamicTableSize), so
 * without this every second call on a kept-alive nginx connection failed with 502.
 * Never-indexed literals are what a server honouring the setting would send anyway; every
 * topology gets the same bytes.
 *
 * A second, HTTP/1.1 listener answers `GET /stats` with what the service saw: calls
 * answered, calls refused, and the `:authority` and `x-mesh-client-id` values, so the
 * runner can prove the sidecars delivered what it measured.
 */
import http2, { type IncomingHttpHeaders, type ServerHttp2Stream } from "node:http2";
import { checkOneMessage, grpcMessage, RESPONSE_MESSAGE_BYTES } from "./wire.ts";

const RESPONSE = grpcMessage(RESPONSE_MESSAGE_BYTES, "x");
/** Fresh objects per call, as the runtime may add to them (`date` is added by node:http2 itself; it is marked too). */
const head = () => ({ ":status": 200, "content-type": "application/grpc", [http2.sensitiveHeaders]: ["content-type", "date"] });
const trailers = () => ({ "grpc-status": "0", [http2.sensitiveHeaders]: ["grpc-status"] });
/** A unary request is small; a body past this is refused rather than buffered. */
const MAX_BODY_BYTES = 64 * 1024;
/** Distinct header values kept for /stats: enough to show what arrived, bounded if a client varied them. */
const MAX_DISTINCT = 16;

export interface ServiceStats {
  answered: number;
  refused: number;
  /** The last reason a call was refused, to show in the runner's error. */
  lastRefusal: string | null;
  authorities: Record<string, number>;
  clientIds: Record<string, number>;
}

const stats: ServiceStats = { answered: 0, refused: 0, lastRefusal: null, authorities: {}, clientIds: {} };

function count(into: Record<string, number>, value: string | string[] | undefined): void {
  const key = value === undefined ? "(none)" : String(value);
  if (key in into || Object.keys(into).length < MAX_DISTINCT) into[key] = (into[key] ?? 0) + 1;
}

function refuse(stream: ServerHttp2Stream, reason: string): void {
  stats.refused++;
  stats.lastRefusal = reason;
  if (!stream.destroyed && !stream.headersSent) stream.respond({ ":status": 400, "content-type": "text/plain" });
  stream.end(reason);
}

function onStream(stream: ServerHttp2Stream, headers: IncomingHttpHeaders): void {
  count(stats.authorities, headers[":authority"]);
  count(stats.clientIds, headers["x-mesh-client-id"]);
  // A failed stream (the client reset it) must not take the process down.
  stream.on("error", () => stream.destroy());
  if (headers[":method"] !== "POST") return refuse(stream, `method ${headers[":method"]}, expected POST`);
  if (headers["content-type"] !== "application/grpc") return refuse(stream, `content-type ${headers["content-type"]}, expected application/grpc`);
  if (headers.te !== "trailers") return refuse(stream, `te ${headers.te}, expected trailers`);
  const chunks: Buffer[] = [];
  let received = 0;
  stream.on("data", (chunk: Buffer) => {
    received += chunk.byteLength;
    if (received <= MAX_BODY_BYTES) chunks.push(chunk);
  });
  // Unary: the answer goes once the whole request has arrived, as a gRPC server's handler runs.
  stream.on("end", () => {
    if (received > MAX_BODY_BYTES) return refuse(stream, `request body of ${received} bytes`);
    const checked = checkOneMessage(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks));
    if (typeof checked === "string") return refuse(stream, checked);
    if (stream.destroyed) return;
    stream.respond(head(), { waitForTrailers: true });
    stream.on("wantTrailers", () => stream.sendTrailers(trailers()));
    stream.end(RESPONSE);
    stats.answered++;
  });
}

// Enough concurrent streams for every shape the bench runs on one connection (nginx and the
// mesh inbound send many streams to the service; h2load direct sends -m per connection).
const server = http2.createServer({ settings: { maxConcurrentStreams: 1000 } });
server.on("stream", onStream);
// A broken session (a client that went) is that client's problem, not the service's.
server.on("sessionError", () => undefined);
server.listen(Number(process.env.PORT ?? 0), "127.0.0.1", () => {
  const address = server.address();
  const port = typeof address === "object" && address !== null ? address.port : 0;
  const statsServer = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => Response.json(stats) });
  console.log(JSON.stringify({ ready: true, port, statsPort: statsServer.port }));
  for (const signal of ["SIGTERM", "SIGINT"] as const)
    process.once(signal, () => {
      void statsServer.stop(true);
      server.close();
      process.exit(0);
    });
});
