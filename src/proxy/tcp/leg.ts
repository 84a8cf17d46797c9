/**
 * The upstream side of a carried TCP connection: its dial (../transport/dial.ts: one
 * timeout over connect, TLS handshake and the peer check), then its socket's events for
 * the owner, which joins it to the client's socket.
 */
import type { Socket, SocketHandler } from "bun";
import { Dial, type DialTarget } from "../transport/dial.ts";

/** What a leg reports to. */
export interface LegOwner {
  /** Connected; on mTLS the peer passed its checks. */
  ready(socket: Socket<UpstreamLeg>): void;
  failed(err: Error): void;
  /** The socket's events once ready. */
  upstreamData(chunk: Uint8Array): void;
  upstreamDrain(): void;
  upstreamEnd(): void;
  upstreamClose(err: Error | undefined): void;
  upstreamTimeout(): void;
}

export class UpstreamLeg {
  readonly dial: Dial<UpstreamLeg>;
  socket: Socket<UpstreamLeg> | undefined;
  lastError: Error | undefined;

  constructor(target: DialTarget, readonly owner: LegOwner) {
    this.dial = new Dial<UpstreamLeg>({ ...target, allowHalfOpen: true }, {
      ready: (sock) => {
        this.socket = sock;
        owner.ready(sock);
      },
      fail: (err) => owner.failed(err),
    });
    this.dial.start(this, HANDLERS);
  }
}

const HANDLERS: SocketHandler<UpstreamLeg> = {
  open: (s) => s.data.dial.opened(s),
  handshake: (s, _ok, authError) => {
    // A refusal after the connect: a renegotiation that failed the checks.
    if (s.data.dial.handshake(s, authError) !== undefined) s.terminate();
  },
  // Nothing is asked of the upstream before the dial is done: bytes before it are a broken peer.
  data: (s, chunk) => (s.data.socket !== undefined ? s.data.owner.upstreamData(chunk) : s.terminate()),
  drain: (s) => void (s.data.socket !== undefined && s.data.owner.upstreamDrain()),
  end: (s) => void (s.data.socket !== undefined && s.data.owner.upstreamEnd()),
  timeout: (s) => void (s.data.socket !== undefined && s.data.owner.upstreamTimeout()),
  close: (s, err) => {
    s.data.dial.socketClosed();
    const why = err ?? s.data.lastError;
    if (s.data.socket !== undefined) s.data.owner.upstreamClose(why);
    else s.data.dial.closed(why);
  },
  error: (s, err) => {
    s.data.lastError ??= err;
    if (s.data.socket === undefined) s.data.dial.errored(err);
  },
  connectError: (s, err) => s.data.dial.connectFailed(err),
};
