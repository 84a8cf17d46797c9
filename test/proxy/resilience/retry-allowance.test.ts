import { describe, expect, test } from "bun:test";
import { FakeClock } from "../../../src/core/clock.ts";
import { CircuitBreaker, DEFAULT_CIRCUIT_BREAKER_LIMITS } from "../../../src/proxy/resilience/circuit-breaker.ts";
import { RetryBudget } from "../../../src/proxy/resilience/retry.ts";
import { RetryAllowance } from "../../../src/proxy/resilience/retry-allowance.ts";

const limitsOf = (maxRetries: number, budgetRetries: number) => ({
  breaker: new CircuitBreaker({ ...DEFAULT_CIRCUIT_BREAKER_LIMITS, maxRetries }),
  // No traffic-earned share: exactly `budgetRetries` over the window.
  budget: new RetryBudget(new FakeClock(), { ratio: 0, minRetriesPerSecond: budgetRetries / 10, windowMs: 10_000, buckets: 10 }),
});

describe("RetryAllowance", () => {
  test("a call holds one breaker slot over all its retries, and frees it at its end", () => {
    const limits = limitsOf(1, 100);
    const first = new RetryAllowance();
    const second = new RetryAllowance();
    expect([first.take(limits), first.take(limits), first.take(limits)]).toEqual([true, true, true]);
    expect(limits.breaker.usage("retries")).toBe(1);
    expect(second.take(limits)).toBe(false);
    first.release(limits);
    first.release(limits);
    expect([limits.breaker.usage("retries"), limits.breaker.misuses]).toEqual([0, 0]);
    expect(second.take(limits)).toBe(true);
  });

  test("each retry withdraws from the budget; an empty budget frees the slot", () => {
    const limits = limitsOf(10, 2);
    const call = new RetryAllowance();
    expect([call.take(limits), call.take(limits), call.take(limits)]).toEqual([true, true, false]);
    expect(limits.breaker.usage("retries")).toBe(0);
    expect(limits.budget.windowRetries()).toBe(2);
    call.release(limits);
    expect(limits.breaker.misuses).toBe(0);
  });
});
