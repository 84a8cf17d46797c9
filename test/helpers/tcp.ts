/** Raw TCP for tests of opaque TCP: a service that echoes with a prefix, and a client that reads to the end. */
import type { Socket, TCPSocketListener } from "bun";

export interface TcpService {
  port: number;
  /** Connections accepted so far. */
  accepted: number;
  /** Connections open now. */
  open: number;
  /** Bytes received over all connections. */
  received: number;
  stop(): void;
}

interface EchoState {
  n: number;
  /** Says `bye <n>` before its end. */
  farewell: boolean;
  /** Bytes the socket has not taken yet; reading pauses while any wait. */
  queue: Uint8Array[];
  ended: boolean;
}

/** Writes what the socket takes; true when nothing is left. */
function flush(s: Socket<EchoState>): boolean {
  const q = s.data.queue;
  while (q.length > 0) {
    const n = s.write(q[0]!);
    if (n < q[0]!.byteLength) {
      q[0] = q[0]!.subarray(Math.max(n, 0));
      return false;
    }
    q.shift();
  }
  return true;
}

/** After the client's FIN and every echoed byte: `bye <n>`, then the end. */
function finish(s: Socket<EchoState>): void {
  if (s.data.ended && s.data.queue.length === 0) s.end(s.data.farewell ? `bye ${s.data.n}` : undefined);
}

/**
 * Echoes every chunk back as it arrives, with backpressure (nothing dropped); at the
 * client's FIN it writes `bye <n>` (n: the bytes it received on that connection) and
 * ends, so a test sees that the client's half-close arrived in order and that the answer
 * after it came back. `farewell: false`: it ends with nothing more than the echo.
 */
export function tcpEchoService(opts: { hostname?: string; farewell?: boolean } = {}): TcpService {
  const farewell = opts.farewell !== false;
  const svc: TcpService = { port: 0, accepted: 0, open: 0, received: 0, stop: () => listener.stop(true) };
  const listener: TCPSocketListener<EchoState> = Bun.listen<EchoState>({
    hostname: opts.hostname ?? "127.0.0.1",
    port: 0,
    allowHalfOpen: true,
    socket: {
      open(s) {
        s.data = { n: 0, queue: [], ended: false, farewell };
        svc.accepted++;
        svc.open++;
      },
      data(s, chunk) {
        s.data.n += chunk.byteLength;
        svc.received += chunk.byteLength;
        s.data.queue.push(new Uint8Array(chunk));
        if (!flush(s)) s.pause();
      },
      drain(s) {
        if (!flush(s)) return;
        s.resume();
        finish(s);
      },
      end(s) {
        s.data.ended = true;
        finish(s);
      },
      close() {
        svc.open--;
      },
    },
  });
  svc.port = listener.port;
  return svc;
}

export interface TcpExchange {
  /** Everything read until the connection closed. */
  bytes: Uint8Array;
  text: string;
  /** The connection was reset or errored rather than ended. */
  error: string | undefined;
}

/** Connects (to 127.0.0.1 unless `host`), sends `payload` (in chunks), half-closes, and reads until the other side closes (at most `timeoutMs`). */
export async function tcpExchange(port: number, payload: Uint8Array | string, opts: { halfClose?: boolean; timeoutMs?: number; chunk?: number; host?: string } = {}): Promise<TcpExchange> {
  const data = typeof payload === "string" ? new TextEncoder().encode(payload) : payload;
  const chunks: Uint8Array[] = [];
  let error: string | undefined;
  let done!: () => void;
  const closed = new Promise<void>((resolve) => (done = resolve));
  let offset = 0;
  const step = opts.chunk ?? 64 * 1024;
  const pump = (s: Socket<undefined>) => {
    while (offset < data.byteLength) {
      const piece = data.subarray(offset, Math.min(offset + step, data.byteLength));
      const n = s.write(piece);
      offset += Math.max(n, 0);
      if (n < piece.byteLength) return;
    }
    if (opts.halfClose !== false) s.shutdown();
  };
  let sock: Socket<undefined>;
  try {
    sock = await connect();
  } catch (err) {
    // Reset before the client's open: the runtime fails the connect itself.
    return { bytes: new Uint8Array(0), text: "", error: (err as Error).message };
  }
  const timer = setTimeout(() => {
    error ??= "timed out";
    sock.terminate();
  }, opts.timeoutMs ?? 10_000);
  await closed;
  clearTimeout(timer);
  const bytes = Buffer.concat(chunks);
  return { bytes: new Uint8Array(bytes), text: bytes.toString("latin1"), error };

  function connect(): Promise<Socket<undefined>> {
    return Bun.connect<undefined>({
      hostname: opts.host ?? "127.0.0.1",
      port,
      allowHalfOpen: true,
      socket: {
        open: (s) => pump(s),
        drain: (s) => pump(s),
        data: (_s, chunk) => void chunks.push(new Uint8Array(chunk)),
        error: (_s, err) => void (error ??= err.message),
        close: (_s, err) => {
          if (err) error ??= err.message;
          done();
        },
      },
    });
  }
}
