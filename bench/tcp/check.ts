/**
 * Proves a topology carries TCP before it is measured: on a new connection one message
 * goes out and comes back byte for byte, then the client's FIN goes through and the
 * service's comes back, with nothing more on the way.
 */
import type { Socket } from "bun";
import { dial } from "./dial.ts";

interface Probe {
  got: Buffer[];
  ended: boolean;
  closed: () => void;
  error: string | undefined;
}

/** One exchange; undefined when it went as it should, else what went wrong. */
export async function problemWithExchange(port: number, timeoutMs = 3000): Promise<string | undefined> {
  const message = Buffer.from(`bench:tcp readiness ${Math.random()}`.padEnd(64, "."));
  let closed!: () => void;
  const done = new Promise<void>((resolve) => (closed = resolve));
  const probe: Probe = { got: [], ended: false, closed, error: undefined };
  let sock: Socket<Probe>;
  try {
    sock = await dial<Probe>(port, probe, {
      data: (s, chunk) => void s.data.got.push(Buffer.from(chunk)),
      end: (s) => {
        // Their FIN before ours was sent: the exchange ends as well.
        s.data.ended = true;
        s.end();
      },
      close: (s, err) => {
        // Our FIN went first, so the runtime reports theirs as a close without an error (no `end`); a reset has one.
        if (err) s.data.error ??= err.message;
        else s.data.ended = true;
        s.data.closed();
      },
      error: (s, err) => void (s.data.error ??= err.message),
    }, timeoutMs, true);
  } catch (err) {
    return (err as Error).message;
  }
  const timer = setTimeout(() => {
    probe.error ??= `no echo and FIN within ${timeoutMs} ms`;
    sock.terminate();
  }, timeoutMs);
  sock.write(message);
  // Our FIN at once: the echo must still come back after it, then the service's FIN.
  sock.shutdown();
  await done;
  clearTimeout(timer);
  const echoed = Buffer.concat(probe.got);
  if (probe.error) return `${probe.error} (${echoed.byteLength} of ${message.byteLength} bytes echoed)`;
  if (!probe.ended) return `closed without a FIN after ${echoed.byteLength} bytes`;
  if (!echoed.equals(message)) return `echo of ${echoed.byteLength} bytes differs from the ${message.byteLength} sent`;
  return undefined;
}

/** Retries until an exchange succeeds, the deadline passes, or `gone()` says a process died. */
export async function waitUntilCarrying(port: number, timeoutMs: number, gone: () => string | undefined): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = "no attempt";
  while (Date.now() < deadline) {
    const dead = gone();
    if (dead) throw new Error(dead);
    const problem = await problemWithExchange(port);
    if (!problem) return;
    last = problem;
    await Bun.sleep(100);
  }
  throw new Error(`no successful exchange within ${timeoutMs} ms: ${last}`);
}
