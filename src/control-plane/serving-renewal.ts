/**
 * The control plane's own certificate, renewed as it renews the workloads': at half its
 * life a replica issues itself a new one (a fresh key, from the signing intermediate) and
 * its TLS listeners take it for new connections. Without this the certificate a replica
 * started with ended a day later, and every sidecar lost its config, its registration and,
 * soon after, its own renewals.
 *
 * No certificate outlives the intermediate that signs it: near the intermediate's end a
 * renewal gains nothing, so it is not taken (each would rotate the listeners for no gain),
 * and once the intermediate has ended, tries back off to one an hour.
 */
import type { LoadedCa } from "../ca/authority.ts";
import type { Logger } from "../core/log.ts";
import { issueServingCert, type ServingCert } from "./identity.ts";
import { LONGEST_TIMER_MS, timerDelay } from "../core/timer-delay.ts";

/** After a failed renewal, the first retry; each next one waits twice as long, up to MAX_RETRY_MS. */
const RETRY_MS = 60_000;
const MAX_RETRY_MS = 3_600_000;

export interface ServingRenewal {
  readonly current: ServingCert;
  stop(): void;
}

export function renewServing(ca: LoadedCa, ttlMs: number, first: ServingCert, use: (next: ServingCert) => void, log: Logger): ServingRenewal {
  let current = first;
  let timer: Timer | undefined;
  let stopped = false;
  let failures = 0;
  const schedule = (delayMs: number) => {
    if (stopped) return;
    timer = setTimeout(renew, timerDelay(delayMs, 1000));
    timer.unref();
  };
  const left = () => current.notAfter.getTime() - Date.now();
  async function renew(): Promise<void> {
    // Half of what is left: renewal at half life, as sidecars do.
    if (left() / 2 > LONGEST_TIMER_MS) return schedule(left() / 2);
    let next: ServingCert;
    try {
      next = await issueServingCert(ca, ttlMs);
    } catch (err) {
      const retryMs = Math.min(MAX_RETRY_MS, RETRY_MS * 2 ** Math.min(failures++, 10));
      log.error({ reason: (err as Error).message, notAfter: current.notAfter.toISOString(), retryInS: retryMs / 1000 }, "control plane certificate not renewed");
      return schedule(retryMs);
    }
    if (stopped) return;
    failures = 0;
    if (next.notAfter <= current.notAfter) {
      // Cut short to the intermediate's end, as the current one already is: nothing to gain until it is replaced.
      log.warn({ notAfter: current.notAfter.toISOString() }, "the control plane's certificate cannot outlive the signing intermediate: run 'mesh ca rotate', then restart the control plane");
      return schedule(left());
    }
    current = next;
    use(next);
    log.info({ notAfter: next.notAfter.toISOString() }, "control plane certificate renewed");
    schedule(left() / 2);
  }
  schedule(left() / 2);
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
