/**
 * The TCP echo service behind every topology of `npm run bench:tcp`, in its own process:
 * every byte a connection sends is written back on it, in order, with backpressure (while
 * the socket has not taken what it was given, the connection's reading pauses, so nothing
 * is dropped and nothing piles up); at the client's FIN it ends once all is written back.
 * Prints one ready line, `{"ready":true,"port":N}`, and stops on SIGTERM or SIGINT.
 */
import type { Socket } from "bun";

interface Echo {
  /** What the socket has not taken yet; reading pauses while any waits. */
  queue: Uint8Array[];
  ended: boolean;
}

/** Writes what the socket takes; true when nothing is left. */
function flush(s: Socket<Echo>): boolean {
  const q = s.data.queue;
  while (q.length > 0) {
    const head = q[0]!;
    const n = s.write(head);
    if (n < head.byteLength) {
      q[0] = head.subarray(Math.max(n, 0));
      return false;
    }
    q.shift();
  }
  return true;
}

const listener = Bun.listen<Echo>({
  hostname: "127.0.0.1",
  port: Number(process.env.PORT ?? 0),
  allowHalfOpen: true,
  socket: {
    open(s) {
      s.setNoDelay(true);
      s.data = { queue: [], ended: false };
    },
    data(s, chunk) {
      // Each read is its own buffer (the runtime allocates one per read), so keeping a view of it is safe.
      if (s.data.queue.length > 0) s.data.queue.push(chunk);
      else {
        const n = s.write(chunk);
        if (n >= chunk.byteLength) return;
        s.data.queue.push(chunk.subarray(Math.max(n, 0)));
      }
      s.pause();
    },
    drain(s) {
      if (!flush(s)) return;
      if (s.data.ended) s.end();
      else s.resume();
    },
    end(s) {
      s.data.ended = true;
      if (s.data.queue.length === 0) s.end();
    },
    error() {
      // A client that reset its connection is its own problem: the socket closes.
    },
  },
});

console.log(JSON.stringify({ ready: true, port: listener.port }));
for (const signal of ["SIGTERM", "SIGINT"] as const)
  process.once(signal, () => {
    listener.stop(true);
    process.exit(0);
  });
