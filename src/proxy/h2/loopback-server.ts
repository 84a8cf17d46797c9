/**
 * The HTTP/2 servers behind the listeners: a connection that opens with the HTTP/2
 * preface (h2c with prior knowledge from the service, or "h2" chosen in ALPN by a peer)
 * is tunnelled here whole, over a Unix socket in the sidecar's private directory, as
 * WebSocket upgrades are (loopback-tunnel.ts), and node:http2 carries its streams.
 *
 * On the mTLS side the tunnel first sends its name, a random UUID and a newline, which
 * maps to the SPIFFE ID its handshake proved, and waits for one byte back before any
 * HTTP/2 byte: Bun hands the socket to the HTTP/2 session natively, and bytes already
 * read in JavaScript would be lost to it (measured).
 */
import http2, { type Http2Server, type IncomingHttpHeaders, type ServerHttp2Session, type ServerHttp2Stream } from "node:http2";
import net, { type Socket } from "node:net";
import { ChurnGuard } from "../transport/mux/churn.ts";
import { resetSession, resetStream } from "./reset.ts";

/** A tunnel's name as sent first: a UUID (36 characters) and "\n". */
const TUNNEL_NAME_BYTES = 37;
export const TUNNEL_NAME_ACK = "\n";

/** Streams one session may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS), as Envoy and Go's server default to. */
const MAX_CONCURRENT_STREAMS = 100;
/** Request headers a stream may carry, as the HTTP/1.1 listeners allow (431 above). */
const MAX_HEADER_LIST_BYTES = 64 * 1024;

/** A session with no stream open for this long is closed (GOAWAY); a long call that is quiet keeps its session. */
const IDLE_SESSION_MS = 300_000;

const CALLER = Symbol("mesh.caller");
const TUNNEL = Symbol("mesh.tunnel");

export type StreamHandler = (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, caller: string | undefined) => void;

export interface H2LoopbackServer {
  /** Open sessions, for the drain. */
  readonly sessions: number;
  /** GOAWAY to every session: streams in flight finish, none start; `force` closes them now. */
  stop(force: boolean): void;
  /** GOAWAY to the session of one named tunnel (its certificates end, or were replaced). */
  retire(tunnel: string): void;
}

/** `identities`: tunnel name → caller's SPIFFE ID, on the mTLS side; undefined on the plain side, where no name is sent. */
export function h2LoopbackServer(path: string, identities: ReadonlyMap<string, string> | undefined, onStream: StreamHandler): H2LoopbackServer {
  const h2: Http2Server = http2.createServer({ settings: { maxConcurrentStreams: MAX_CONCURRENT_STREAMS, maxHeaderListSize: MAX_HEADER_LIST_BYTES } });
  /** Each session's open streams. */
  const open = new Map<ServerHttp2Session, Set<ServerHttp2Stream>>();
  // Rapid reset: a client that ends most of its streams right after opening them is cut off.
  const churn = new WeakMap<ServerHttp2Session, ChurnGuard>();
  /** Named tunnels' sessions. */
  const byTunnel = new Map<string, ServerHttp2Session>();
  h2.on("session", (s) => {
    open.set(s, new Set());
    churn.set(s, new ChurnGuard());
    const tunnel = (s.socket as unknown as { [TUNNEL]?: string } | undefined)?.[TUNNEL];
    if (tunnel !== undefined) byTunnel.set(tunnel, s);
    s.on("close", () => {
      open.delete(s);
      if (tunnel !== undefined) byTunnel.delete(tunnel);
    });
    s.on("error", () => resetSession(s, open.get(s) ?? [], "session error"));
    s.setTimeout(IDLE_SESSION_MS, () => {
      if (open.get(s)?.size === 0) s.close();
    });
  });
  h2.on("stream", (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => {
    const session = stream.session as ServerHttp2Session;
    const streams = open.get(session);
    streams?.add(stream);
    stream.on("close", () => streams?.delete(stream));
    stream.on("error", () => resetStream(stream, "stream error"));
    const guard = churn.get(session);
    if (guard !== undefined) {
      const openedAt = performance.now();
      guard.streamOpened();
      // "aborted": the client reset the stream before its response was complete. The
      // session is closed gracefully (GOAWAY, no new streams): a peer sidecar's session
      // carries other callers' calls too, which finish.
      stream.on("aborted", () => {
        if (guard.endedBusy(performance.now() - openedAt) && !session.closed) session.close();
      });
    }
    const caller = (stream.session?.socket as unknown as { [CALLER]?: string } | undefined)?.[CALLER];
    if (identities !== undefined && caller === undefined) return resetStream(stream, "no caller identity");
    onStream(stream, headers, caller);
  });
  const server = net.createServer((sock) => {
    sock.on("error", () => sock.destroy());
    if (identities === undefined) return void h2.emit("connection", sock);
    readName(sock, (name) => {
      const caller = identities.get(name);
      if (caller === undefined) return void sock.destroy();
      (sock as unknown as { [CALLER]: string })[CALLER] = caller;
      (sock as unknown as { [TUNNEL]: string })[TUNNEL] = name;
      sock.write(TUNNEL_NAME_ACK);
      h2.emit("connection", sock);
    });
  });
  server.listen(path);
  return {
    get sessions() {
      return open.size;
    },
    stop(force) {
      server.close();
      for (const [s, streams] of open) force ? resetSession(s, streams, "the sidecar stopped") : s.close();
    },
    retire(tunnel) {
      const s = byTunnel.get(tunnel);
      if (s !== undefined && !s.closed) s.close();
    },
  };
}

/** Reads the tunnel's name, exactly: nothing follows it until the acknowledgement. */
function readName(sock: Socket, named: (name: string) => void): void {
  let got = Buffer.alloc(0);
  const take = () => {
    let chunk: Buffer | null;
    while ((chunk = sock.read() as Buffer | null) !== null) got = Buffer.concat([got, chunk]);
    if (got.byteLength < TUNNEL_NAME_BYTES) return;
    sock.off("readable", take);
    if (got.byteLength > TUNNEL_NAME_BYTES || got[TUNNEL_NAME_BYTES - 1] !== 10) return void sock.destroy();
    named(got.subarray(0, TUNNEL_NAME_BYTES - 1).toString("latin1"));
  };
  sock.on("readable", take);
}
