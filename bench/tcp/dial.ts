/** A client connection to 127.0.0.1, bounded in time: a connect that takes too long is an error, and its socket is closed if it comes later. */
import type { Socket, SocketHandler } from "bun";

/** `allowHalfOpen`: the peer's FIN is an `end` event and the socket stays open until closed; otherwise the runtime closes it at the FIN. */
export async function dial<T>(port: number, data: T, socket: SocketHandler<T>, timeoutMs: number, allowHalfOpen = false): Promise<Socket<T>> {
  let timer: Timer | undefined;
  let late = false;
  const connecting = Bun.connect<T>({ hostname: "127.0.0.1", port, data, socket, allowHalfOpen });
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      late = true;
      reject(new Error(`connect to 127.0.0.1:${port} took over ${timeoutMs} ms`));
    }, timeoutMs);
  });
  // A connect that succeeds after the deadline is closed at once: nothing may be left open.
  void connecting.then((s) => late && s.terminate(), () => undefined);
  try {
    const sock = await Promise.race([connecting, timeout]);
    sock.setNoDelay(true);
    return sock;
  } finally {
    clearTimeout(timer);
  }
}
