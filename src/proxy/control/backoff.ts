/**
 * Reconnect delays: full jitter over a doubling cap, so a restarted control plane is not
 * stampeded. The default cap is short (5 s): once the control plane is back, a proxy
 * should pick up changes within seconds, and jitter already spreads the load.
 */
import { backoffMs, type RetryPolicy } from "../resilience/retry.ts";

export class Backoff {
  private attempt = 0;
  private readonly policy: Pick<RetryPolicy, "backoff">;

  constructor(baseMs = 250, maxMs = 5_000, private random: () => number = Math.random) {
    this.policy = { backoff: { baseMs, maxMs } };
  }

  next(): number {
    const ms = backoffMs(this.policy, this.attempt, this.random);
    this.attempt = Math.min(this.attempt + 1, 30);
    return ms;
  }

  reset(): void {
    this.attempt = 0;
  }
}
