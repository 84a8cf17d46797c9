/** Loopback ports for servers whose config file must name a port before they start. */
export function freePort(): number {
  // Bind port 0, note what the kernel chose, release it. Another process could take it
  // in between; on this loopback-only bench that race shows up as a failed start, not a wrong result.
  const listener = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = listener.port;
  listener.stop(true);
  return port;
}
