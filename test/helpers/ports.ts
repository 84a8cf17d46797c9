/** Ports the kernel hands out on loopback, all held at once so none repeats, then released for the caller to bind. */
export function freePorts(n: number): number[] {
  const listeners = Array.from({ length: n }, () => Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } }));
  const ports = listeners.map((l) => l.port);
  for (const l of listeners) l.stop(true);
  return ports;
}

export function freePort(): number {
  return freePorts(1)[0]!;
}
