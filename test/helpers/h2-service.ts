/** A plain HTTP/2 (h2c) service for tests: answers with what it received, as JSON. */
import http2, { type IncomingHttpHeaders, type ServerHttp2Stream } from "node:http2";

export interface H2Seen {
  method: string;
  path: string;
  authority: string;
  caller: string | null;
  body: string;
  headers: Record<string, string | string[] | undefined>;
}

export interface H2Service {
  port: number;
  seen: H2Seen[];
  stop(): void;
}

export async function h2Service(name: string): Promise<H2Service> {
  const seen: H2Seen[] = [];
  const server = http2.createServer();
  server.on("stream", (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => {
    let body = "";
    stream.on("data", (d) => (body += d));
    // Bun 1.4.5 emits "end" on a stream the client reset too, before "aborted": looked at a turn later, a reset one is no request seen.
    stream.on("end", () => setImmediate(() => {
      if (stream.aborted || stream.rstCode || stream.destroyed) return;
      const s: H2Seen = { method: String(headers[":method"]), path: String(headers[":path"]), authority: String(headers[":authority"]), caller: (headers["x-mesh-client-id"] as string | undefined) ?? null, body, headers: { ...headers } };
      seen.push(s);
      stream.respond({ ":status": 200, "content-type": "application/json", "x-served-by": name });
      stream.end(JSON.stringify({ service: name, ...s, headers: undefined }));
    }));
    stream.on("error", () => {});
  });
  const port = await new Promise<number>((resolve) => server.listen(0, "127.0.0.1", () => resolve((server.address() as { port: number }).port)));
  return { port, seen, stop: () => server.close() };
}
