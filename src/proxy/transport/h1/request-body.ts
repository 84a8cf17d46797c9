/**
 * Streams a request body onto a connection with backpressure: a chunk the socket does
 * not fully take is kept by the connection, and the next chunk is read from the body
 * only after `drain`. Unknown lengths go chunked; a declared Content-Length is held to
 * exactly (an upstream told 10 bytes and sent 11 would read the 11th as the next request).
 */
import { RequestBodyError } from "./errors.ts";
import type { PreparedRequest, RequestFraming } from "./request-head.ts";

export interface RequestSink {
  /** True when the socket took all of `data` (of a Uint8Array, bytes [start, end)); otherwise the rest is queued until drain. */
  write(data: string | Uint8Array, start?: number, end?: number): boolean;
  /** Resolves true once queued bytes are flushed, false if the connection went away. */
  drained(): Promise<boolean>;
  /** False once the exchange is over (connection closed or failed): stop reading the body. */
  live(): boolean;
}

/**
 * A request body pushed from elsewhere (a downstream connection) rather than read from
 * a stream. `pump` writes it framed as `framing` says, with the same contract as
 * pumpBody: true when all of it went out, false when the connection went away first,
 * RequestBodyError when the body is not what was declared or its source failed.
 */
export interface BodySource {
  pump(framing: RequestFraming, sink: RequestSink): Promise<boolean>;
  /**
   * When the whole body, exactly `length` bytes, is already here: a buffer of
   * `room + length` bytes with the body after the first `room`, and the body counts as
   * pumped; otherwise undefined, and nothing changes. Lets a small body go out in the
   * same write as its head, with no pump.
   */
  takeWhole?(length: number, room: number): Buffer | undefined;
}

export type RequestBody = ReadableStream<Uint8Array> | BodySource;

/** One chunk of the chunked coding, in one buffer so it goes out in one write. */
export function chunkFrame(data: Uint8Array): Uint8Array {
  const size = data.byteLength.toString(16);
  const out = Buffer.allocUnsafe(size.length + data.byteLength + 4);
  out.write(size, 0, "latin1");
  let at = size.length;
  out[at++] = 13;
  out[at++] = 10;
  out.set(data, at);
  at += data.byteLength;
  out[at++] = 13;
  out[at] = 10;
  return out;
}

/**
 * Resolves true when the whole body (and the chunked terminator) was handed to the
 * socket, false when the connection went away first. Throws RequestBodyError when the
 * body is not what was declared or its stream fails.
 */
export async function pumpBody(body: ReadableStream<Uint8Array>, framing: RequestFraming, sink: RequestSink): Promise<boolean> {
  const reader = body.getReader();
  let sent = 0;
  try {
    for (;;) {
      // Nothing queued to flush first: the head went out, or we waited for drain.
      let result: Awaited<ReturnType<typeof reader.read>>;
      try {
        result = await reader.read();
      } catch (err) {
        throw new RequestBodyError(`request body stream failed: ${(err as Error)?.message ?? String(err)}`, { cause: err });
      }
      if (!sink.live()) {
        // The exchange failed meanwhile; nobody will read the rest.
        reader.cancel().catch(() => {});
        return false;
      }
      if (result.done) break;
      const chunk = result.value;
      if (!(chunk instanceof Uint8Array)) throw new RequestBodyError("request body chunk is not a Uint8Array");
      if (chunk.byteLength === 0) continue;
      sent += chunk.byteLength;
      if (framing.kind === "length") {
        if (sent > framing.length) throw new RequestBodyError(`request body longer than its content-length ${framing.length}`);
        if (!sink.write(chunk) && !(await sink.drained())) return false;
        // Done as soon as the declared length is out: waiting for the stream's end could
        // hold the connection after the upstream has already answered.
        if (sent === framing.length) return true;
      } else if (!sink.write(chunkFrame(chunk)) && !(await sink.drained())) {
        return false;
      }
    }
    if (framing.kind === "length" && sent !== framing.length)
      throw new RequestBodyError(`request body ended after ${sent} of ${framing.length} bytes (content-length)`);
    if (framing.kind === "chunked" && !sink.write("0\r\n\r\n") && !(await sink.drained())) return false;
    return true;
  } catch (err) {
    reader.cancel(err).catch(() => {});
    throw err;
  } finally {
    reader.releaseLock();
  }
}

/** The head and the whole body in one buffer, when the body can hand itself over now (BodySource.takeWhole). */
export function headWithBody(req: Pick<PreparedRequest, "head" | "headStart" | "headEnd">, length: number, body: RequestBody): Uint8Array | undefined {
  if (body instanceof ReadableStream || body.takeWhole === undefined) return undefined;
  const { head, headStart, headEnd } = req;
  const out = body.takeWhole(length, headEnd - headStart);
  if (out === undefined) return undefined;
  // String heads are ASCII (request-head.ts): characters are bytes.
  if (typeof head === "string") out.write(head, 0, "latin1");
  // Buffer's copy takes a range of any Uint8Array: no view of it is made.
  else Buffer.prototype.copy.call(head, out, 0, headStart, headEnd);
  return out;
}
