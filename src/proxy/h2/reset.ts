/**
 * Resetting a server stream. In Bun 1.4.5 `ServerHttp2Stream.close(code)` ends the stream
 * with an empty DATA frame carrying END_STREAM, not with RST_STREAM (measured): a client
 * would read a body cut short as complete. `destroy(error)` sends RST_STREAM
 * INTERNAL_ERROR, so every reset the proxy makes goes through here (and client streams
 * are cancelled with destroy() too: stream-relay.ts).
 */
import type { ServerHttp2Session, ServerHttp2Stream } from "node:http2";
import { holdToEndOfTurn, type HeldWrite } from "../transport/turn-writes.ts";

/**
 * Calls `ended` once the client has ended its request body, never when it reset the
 * stream or its connection went: Bun 1.4.5 emits "end" on a server stream for those
 * too, before "aborted" (measured), so a relay that passed that "end" on would hand the
 * service a body cut short as a whole one. By the next turn of the event loop a reset
 * has shown itself.
 */
export function onRequestEnd(stream: ServerHttp2Stream, ended: () => void): void {
  stream.on("end", () => holdToEndOfTurn(new RequestEnd(stream, ended)));
}

/** A request's end, acted on at the end of the turn unless the stream was reset meanwhile. */
class RequestEnd implements HeldWrite {
  constructor(
    private readonly stream: ServerHttp2Stream,
    private readonly ended: () => void,
  ) {}

  flushHeld(): void {
    if (!this.stream.aborted && !this.stream.rstCode) this.ended();
  }
}

export function resetStream(stream: ServerHttp2Stream, why: string): void {
  if (!stream.destroyed) stream.destroy(new Error(why));
}

/** Ends a session now: its open streams reset first, since a session destroyed alone ends them as if complete. */
export function resetSession(session: ServerHttp2Session, streams: Iterable<ServerHttp2Stream>, why: string): void {
  for (const stream of streams) resetStream(stream, why);
  if (!session.destroyed) session.destroy(new Error(why));
}
