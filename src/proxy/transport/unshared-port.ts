/**
 * The first bind of a listener that rotates its certificate by SO_REUSEPORT (a second
 * listener on the same port, then the first one stops). The kernel lets a socket bind
 * beside a live one only if both ask for SO_REUSEPORT, so the first listener has to ask
 * too — and with that alone it would bind beside any live listener of the same user that
 * asked for it (another sidecar given the same port), and new connections would be split
 * between the two processes. So the port is bound once without SO_REUSEPORT and let go
 * first: that fails with EADDRINUSE while anything listens there.
 *
 * Between the probe and the real bind (the same tick, microseconds) another process could
 * still take the port the same way: only two started at the same instant on one port can
 * end up sharing it, which is judged acceptable.
 */
import type { TCPSocketListener } from "bun";

/** `port` if nothing listens on it now (port 0: an ephemeral port free now); throws (EADDRINUSE) otherwise. */
export function unsharedPort(hostname: string, port: number): number {
  const probe: TCPSocketListener<undefined> = Bun.listen<undefined>({ hostname, port, socket: { data: () => undefined } });
  const free = probe.port;
  probe.stop(true);
  return free;
}
