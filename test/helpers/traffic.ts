/** Steady, bounded client traffic through a sidecar, recording every request that did not succeed. */
export interface SteadyTraffic {
  /** Requests answered 200 so far. */
  readonly succeeded: number;
  /** Stops the loop and returns what it saw. */
  stop(): Promise<{ sent: number; failures: string[] }>;
}

/** Bounded by `maxRequests` and by `maxMs`, whichever comes first. */
export function steadyTraffic(outboundPort: number, host: string, pauseMs = 10, maxRequests = 100_000, maxMs = 120_000): SteadyTraffic {
  const failures: string[] = [];
  let sent = 0;
  let succeeded = 0;
  let running = true;
  const until = Date.now() + maxMs;
  const loop = (async () => {
    while (running && sent < maxRequests && Date.now() < until) {
      sent++;
      const res = await fetch(`http://127.0.0.1:${outboundPort}/`, { headers: { host } }).catch((e: Error) => e);
      if (res instanceof Error) failures.push(String(res));
      else {
        if (res.status !== 200) failures.push(`${res.status} ${res.headers.get("x-mesh-error") ?? ""} ${await res.text()}`.trim());
        else succeeded++, await res.arrayBuffer();
      }
      await Bun.sleep(pauseMs);
    }
  })();
  return {
    get succeeded() {
      return succeeded;
    },
    async stop() {
      running = false;
      await loop;
      return { sent, failures };
    },
  };
}

/** The endpoints a sidecar currently balances `service` over, from its /config_dump. */
export async function endpointsSeenBy(adminPort: number, service: string): Promise<string[]> {
  const dump = (await (await fetch(`http://127.0.0.1:${adminPort}/config_dump`)).json()) as { destinations: { name: string; endpoints: { address: string }[] }[] };
  return dump.destinations.find((d) => d.name === service)?.endpoints.map((e) => e.address).sort() ?? [];
}
