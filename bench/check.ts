/** Proves a topology serves before it is measured: 200 and the service's 100-byte body. */
export const SERVICE_HOST = "payments";
export const BODY_BYTES = 100;

export async function problemWith(url: string): Promise<string | undefined> {
  try {
    const res = await fetch(url, { headers: { host: SERVICE_HOST }, signal: AbortSignal.timeout(3000) });
    const body = await res.text();
    if (res.status !== 200) return `status ${res.status}: ${body.slice(0, 300)}`;
    if (body.length !== BODY_BYTES) return `body of ${body.length} bytes, expected ${BODY_BYTES}`;
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}

/** Retries until the topology answers correctly, the deadline passes, or `gone()` says a process died. */
export async function waitUntilServing(url: string, timeoutMs: number, gone: () => string | undefined = () => undefined): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = "no attempt";
  while (Date.now() < deadline) {
    const dead = gone();
    if (dead) throw new Error(dead);
    const problem = await problemWith(url);
    if (!problem) return;
    last = problem;
    await Bun.sleep(50);
  }
  throw new Error(`not serving after ${timeoutMs} ms: ${last}`);
}

/** Waits until something accepts TCP on a loopback port (for listeners only mTLS clients may talk to). */
export async function waitForPort(port: number, timeoutMs: number, gone: () => string | undefined = () => undefined): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const dead = gone();
    if (dead) throw new Error(dead);
    const open = await Bun.connect({ hostname: "127.0.0.1", port, socket: { data() {} } }).then(
      (s) => (s.end(), true),
      () => false,
    );
    if (open) return;
    await Bun.sleep(50);
  }
  throw new Error(`nothing listening on 127.0.0.1:${port} after ${timeoutMs} ms`);
}
