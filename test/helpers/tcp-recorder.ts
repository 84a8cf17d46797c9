/**
 * A TCP service (on 127.0.0.1) that records, per connection, its reads, what it received, and
 * whether it ended by FIN or by reset; hooks script how it answers. The tests of carried TCP
 * judge what the far side of a sidecar saw through it.
 */
import type { Socket, TCPSocketListener } from "bun";

export interface RecordedConn {
  sock: Socket<RecordedConn>;
  /** Data events: how many pieces the bytes came in. */
  reads: number;
  bytes: number;
  /** What it received, as latin1 (one char per byte); empty with `keepText: false`. */
  text: string;
  /** The client's FIN arrived. */
  ended: boolean;
  closed: boolean;
  /** Why it closed, if it was reset or failed. */
  error: string | undefined;
}

export interface TcpRecorder {
  port: number;
  conns: RecordedConn[];
  stop(): void;
}

export interface RecorderHooks {
  open?(c: RecordedConn): void;
  data?(c: RecordedConn, chunk: Buffer): void;
  /** At the client's FIN; without it the service ends its side too. */
  end?(c: RecordedConn): void;
  drain?(c: RecordedConn): void;
}

/** `keepText: false` only counts what arrives (bulk transfers). */
export function tcpRecorder(hooks: RecorderHooks = {}, opts: { keepText?: boolean } = {}): TcpRecorder {
  const keepText = opts.keepText !== false;
  const conns: RecordedConn[] = [];
  const listener: TCPSocketListener<RecordedConn> = Bun.listen<RecordedConn>({
    hostname: "127.0.0.1",
    port: 0,
    allowHalfOpen: true,
    socket: {
      open(s) {
        s.data = { sock: s, reads: 0, bytes: 0, text: "", ended: false, closed: false, error: undefined };
        conns.push(s.data);
        hooks.open?.(s.data);
      },
      data(s, chunk) {
        s.data.reads++;
        s.data.bytes += chunk.byteLength;
        if (keepText) s.data.text += chunk.toString("latin1");
        hooks.data?.(s.data, chunk);
      },
      end(s) {
        s.data.ended = true;
        if (hooks.end) hooks.end(s.data);
        else s.end();
      },
      drain: (s) => hooks.drain?.(s.data),
      error: (s, err) => void (s.data.error ??= err.message),
      close(s, err) {
        if (err) s.data.error ??= err.message;
        s.data.closed = true;
      },
    },
  });
  return { port: listener.port, conns, stop: () => listener.stop(true) };
}
