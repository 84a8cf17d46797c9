/**
 * Servers outside the mesh for the passthrough review, as their own process (for network
 * namespaces): `review-outside.ts ADDRESS` answers HTTP on one port ({outside: true, method,
 * path, host}) and echoes raw bytes on another (nothing first; at the client's FIN it ends
 * too, after what it echoed). Prints both ports.
 */
import type { Socket } from "bun";

const hostname = process.argv[2] ?? "127.0.0.1";
const http = Bun.serve({
  hostname,
  port: 0,
  fetch: (req) => Response.json({ outside: true, method: req.method, path: new URL(req.url).pathname, host: req.headers.get("host"), caller: req.headers.get("x-mesh-client-id") }),
});

interface Echo {
  queue: Uint8Array[];
  ended: boolean;
}

function flush(s: Socket<Echo>): boolean {
  const q = s.data.queue;
  while (q.length > 0) {
    const n = s.write(q[0]!);
    if (n < q[0]!.byteLength) {
      q[0] = q[0]!.subarray(Math.max(n, 0));
      return false;
    }
    q.shift();
  }
  if (s.data.ended) s.end();
  return true;
}

const echo = Bun.listen<Echo>({
  hostname,
  port: 0,
  allowHalfOpen: true,
  socket: {
    open: (s) => void (s.data = { queue: [], ended: false }),
    data: (s, chunk) => {
      s.data.queue.push(new Uint8Array(chunk));
      if (!flush(s)) s.pause();
    },
    drain: (s) => {
      if (flush(s)) s.resume();
    },
    end: (s) => {
      s.data.ended = true;
      flush(s);
    },
  },
});
console.log(JSON.stringify({ ready: true, http: http.port, echo: echo.port }));
