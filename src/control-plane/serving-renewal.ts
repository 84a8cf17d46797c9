/**
 * The control plane's own certificate, renewed as it renews the workloads': at half its
 * life a replica issues itself a new one (a fresh key, from the signing intermediate) and
 * its TLS listeners take it for new connections. Without this the certificate a replica
 * started with ended a day later, and every sidecar lost its config, its registration and,
 * soon after, its own renewals.
 */
import type { LoadedCa } from "../ca/authority.ts";
import type { Logger } from "../core/log.ts";
import { issueServingCert, type ServingCert } from "./identity.ts";

/** After a failed renewal, the next try: soon, but not in a loop. */
const RETRY_MS = 60_000;
/** setTimeout's longest delay; a later moment is reached in steps. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export interface ServingRenewal {
  readonly current: ServingCert;
  stop(): void;
}

export function renewServing(ca: LoadedCa, ttlMs: number, first: ServingCert, use: (next: ServingCert) => void, log: Logger): ServingRenewal {
  let current = first;
  let timer: Timer | undefined;
  let stopped = false;
  const schedule = (delayMs: number) => {
    if (stopped) return;
    timer = setTimeout(renew, Math.min(MAX_TIMER_MS, Math.max(1, delayMs)));
    timer.unref();
  };
  /** Half of what is left of the certificate's life: renewal at half life, as sidecars do. */
  const halfLeft = () => (current.notAfter.getTime() - Date.now()) / 2;
  async function renew(): Promise<void> {
    if (halfLeft() > MAX_TIMER_MS / 2) return schedule(halfLeft());
    try {
      const next = await issueServingCert(ca, ttlMs);
      if (stopped) return;
      current = next;
      use(next);
      log.info({ notAfter: next.notAfter.toISOString() }, "control plane certificate renewed");
      schedule(halfLeft());
    } catch (err) {
      log.error({ reason: (err as Error).message, notAfter: current.notAfter.toISOString() }, "control plane certificate not renewed; trying again");
      schedule(Math.min(RETRY_MS, Math.max(1000, halfLeft())));
    }
  }
  schedule(halfLeft());
  return {
    get current() {
      return current;
    },
    stop() {
      stopped = true;
      clearTimeout(timer);
    },
  };
}
