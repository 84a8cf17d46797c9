/**
 * The runtime's floor: the least any proxy on this Bun can do per request. A byte
 * relay on raw sockets, one upstream connection per client connection, no HTTP parsing,
 * no pool, no TLS, no metrics: what it costs in CPU and memory is the runtime's share of
 * every Bun proxy, mesh included. Not a proxy anyone should run (it neither reads nor
 * checks what it relays); the bench shows it beside "mesh one proxy" so the distance
 * between them is what mesh itself costs.
 *
 *   bun bench/relay.ts UPSTREAM_PORT   → prints {"ready":true,"port":N}
 */
import type { Socket } from "bun";

interface Side {
  peer: Socket<Side> | undefined;
  /** Client bytes that arrived before the upstream connection opened. */
  early: Uint8Array[];
}

const upstreamPort = Number(process.argv[2]);
if (!Number.isInteger(upstreamPort) || upstreamPort <= 0) throw new Error(`usage: relay.ts UPSTREAM_PORT (got ${JSON.stringify(process.argv[2])})`);

const listener = Bun.listen<Side>({
  hostname: "127.0.0.1",
  port: 0,
  socket: {
    open(client) {
      client.data = { peer: undefined, early: [] };
      void Bun.connect<Side>({
        hostname: "127.0.0.1",
        port: upstreamPort,
        socket: {
          open(upstream) {
            upstream.data = { peer: client, early: [] };
            client.data.peer = upstream;
            for (const chunk of client.data.early) upstream.write(chunk);
            client.data.early = [];
          },
          data: (upstream, chunk) => void upstream.data.peer?.write(chunk),
          close: (upstream) => void upstream.data.peer?.end(),
          error: (upstream) => void upstream.data.peer?.end(),
        },
      }).catch(() => client.end());
    },
    // A 100-byte benchmark response always fits the socket buffer: no backpressure needed here.
    data(client, chunk) {
      if (client.data.peer) client.data.peer.write(chunk);
      else client.data.early.push(new Uint8Array(chunk));
    },
    close: (client) => void client.data.peer?.end(),
    error: (client) => void client.data.peer?.end(),
  },
});
console.log(JSON.stringify({ ready: true, port: listener.port }));

for (const signal of ["SIGTERM", "SIGINT"] as const)
  process.once(signal, () => {
    listener.stop(true);
    process.exit(0);
  });
