/**
 * The first bind of a listener that rotates its certificate by SO_REUSEPORT (a second
 * listener on the same port, then the first one stops). The kernel lets a socket bind
 * beside a live one only if both ask for SO_REUSEPORT, so the first listener has to ask
 * too — and with that alone it would bind beside any live listener of the same user that
 * asked for it (another sidecar given the same port), and new connections would be split
 * between the two processes. So the port is bound once without SO_REUSEPORT and let go
 * first: that fails with EADDRINUSE while anything listens there.
 *
 * Between that probe and the real bind, another mesh process could still take the port
 * the same way. So the address is first claimed by an abstract Unix socket named after it:
 * its name is the process's while the socket is open, a second bind of the name fails,
 * and the kernel lets it go when the process ends, however it ends. Abstract names belong
 * to a network namespace, as ports do.
 */
import type { TCPSocketListener, UnixSocketListener } from "bun";

export interface PortClaim {
  /** The port bound (the ephemeral one chosen, for port 0). */
  port: number;
  /** When the listener stops for good; its rotations keep the claim. */
  release(): void;
}

/** Claims `hostname:port` if nothing listens on it now (port 0: an ephemeral port free now); throws (EADDRINUSE) otherwise. */
export function claimUnsharedPort(hostname: string, port: number): PortClaim {
  // Port 0 has no name to claim before the kernel picks one; the pick is then claimed before it is bound.
  const early = port === 0 ? undefined : claimName(hostname, port);
  let free: number;
  try {
    free = probe(hostname, port);
  } catch (err) {
    early?.stop(true);
    throw err;
  }
  const claim = early ?? claimName(hostname, free);
  return { port: free, release: () => claim.stop(true) };
}

/** Claims `hostname:port`, then binds what it stands for with `bind`; the claim is let go if that fails. */
export function bindClaimed<T>(hostname: string, port: number, bind: (port: number) => T): { bound: T; claim: PortClaim } {
  const claim = claimUnsharedPort(hostname, port);
  try {
    return { bound: bind(claim.port), claim };
  } catch (err) {
    claim.release();
    throw err;
  }
}

function probe(hostname: string, port: number): number {
  const listener: TCPSocketListener<undefined> = Bun.listen<undefined>({ hostname, port, socket: { data: () => undefined } });
  const free = listener.port;
  listener.stop(true);
  return free;
}

/**
 * Bun's EADDRINUSE if another process holds the name: bindNamed reports it as the port in use.
 * It is a listener only for its name: any process of the namespace may connect to it, and
 * each connection is closed at once, so none holds a descriptor of ours.
 */
function claimName(hostname: string, port: number): UnixSocketListener<undefined> {
  return Bun.listen<undefined>({ unix: `\0mesh-listener/${hostname}/${port}`, socket: { open: (socket) => socket.terminate(), data: () => undefined } });
}
