/**
 * One call's claim on its destination's retries: a breaker `retries` slot, taken at the
 * first retry and held until the call ends, and one withdrawal from the retry budget per
 * retry. Shared by the HTTP/1.1 call (outbound-call.ts) and the HTTP/2 stream
 * (h2/stream-retries.ts), so both count against the same limits the same way.
 */
import type { CircuitBreaker } from "./circuit-breaker.ts";
import type { RetryBudget } from "./retry.ts";

export interface RetryLimits {
  breaker: CircuitBreaker;
  budget: RetryBudget;
}

export class RetryAllowance {
  private holding = false;

  /** Whether one more retry may go out; false frees the slot this call held. */
  take(limits: RetryLimits): boolean {
    const held = this.holding || limits.breaker.tryAcquire("retries") === true;
    if (held && limits.budget.tryWithdraw()) return (this.holding = true);
    if (held) limits.breaker.release("retries");
    this.holding = false;
    return false;
  }

  /** The call is over: its slot, if it held one, is free again. */
  release(limits: RetryLimits): void {
    if (this.holding) limits.breaker.release("retries");
    this.holding = false;
  }
}
