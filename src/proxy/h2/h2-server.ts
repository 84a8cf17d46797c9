/**
 * The HTTP/2 side of a listener: a connection that opens with the HTTP/2 preface (h2c with
 * prior knowledge from the service, or "h2" chosen in ALPN by a peer sidecar) becomes a
 * server session on the listener's own socket (wire/server-session.ts), and its streams go
 * to the stream handler, with the caller's SPIFFE ID on the mTLS listener.
 */
import type { IncomingHttpHeaders } from "node:http2";
import type { ServerConnection } from "../transport/h1-server/connection.ts";
import { ErrorCode } from "./wire/frames.ts";
import { H2ServerSession } from "./wire/server-session.ts";
import type { H2ServerStream } from "./wire/server-stream.ts";

export type StreamHandler = (stream: H2ServerStream, headers: IncomingHttpHeaders, caller: string | undefined) => void;

/** Streams one session may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS), as Envoy and Go's server default to. */
const MAX_CONCURRENT_STREAMS = 100;
/** Request headers a stream may carry, as the HTTP/1.1 listeners allow (431 above). */
const MAX_HEADER_LIST_BYTES = 64 * 1024;
/** A session with no stream open for this long is closed (GOAWAY); a long call that is quiet keeps its session. */
const IDLE_SESSION_MS = 300_000;

export interface H2ServerOptions {
  /** The mTLS listener: every stream must have its caller's identity. */
  callerRequired: boolean;
  onStream: StreamHandler;
  /** A stream refused before its handler (a label for mesh_requests_refused_total). */
  onRefused(reason: string): void;
}

export class H2Server {
  private readonly live = new Set<H2ServerSession>();
  private readonly limits = { maxConcurrentStreams: MAX_CONCURRENT_STREAMS, maxHeaderListBytes: MAX_HEADER_LIST_BYTES, idleSessionMs: IDLE_SESSION_MS };

  constructor(private readonly opts: H2ServerOptions) {}

  /** Open sessions (tests watch them end). */
  get sessions(): number {
    return this.live.size;
  }

  /** Takes `conn` over; `initial` (the preface and what followed it) is read first. */
  accept(conn: ServerConnection, initial: Uint8Array): void {
    const { opts, live } = this;
    const session = new H2ServerSession(conn, this.limits, {
      stream(stream) {
        if (opts.callerRequired && stream.caller === undefined) return stream.reset(ErrorCode.INTERNAL_ERROR);
        opts.onStream(stream, stream.headers, stream.caller);
      },
      refused: opts.onRefused,
      closed: (s) => live.delete(s),
    });
    live.add(session);
    session.onData(Buffer.from(initial.buffer, initial.byteOffset, initial.byteLength));
  }

  /** GOAWAY to every session: streams in flight finish, none start; `force` resets them now. */
  stop(force: boolean): void {
    for (const session of [...this.live]) force ? session.stop() : session.retire();
  }
}
