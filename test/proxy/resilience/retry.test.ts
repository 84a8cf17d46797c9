import { describe, expect, test } from "bun:test";
import { FakeClock } from "../../../src/core/clock.ts";
import {
  type AttemptOutcome,
  backoffMs,
  DEFAULT_RETRY_BUDGET,
  DEFAULT_RETRY_POLICY,
  isRetryableRequest,
  RetryBudget,
  type RetryPolicy,
  shouldRetry,
} from "../../../src/proxy/resilience/retry.ts";
import { seeded } from "../../helpers/prng.ts";

const noHeaders = { get: (_: string) => null };

describe("isRetryableRequest", () => {
  test("idempotent methods are retryable", () => {
    for (const m of ["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"]) {
      expect(isRetryableRequest(m, noHeaders)).toBe(true);
    }
  });

  test("POST, PATCH, CONNECT and unknown methods are not", () => {
    for (const m of ["POST", "PATCH", "CONNECT", "PURGE", "get"]) {
      expect(isRetryableRequest(m, noHeaders)).toBe(false);
    }
  });

  test("an Idempotency-Key makes any method retryable; an empty one does not", () => {
    expect(isRetryableRequest("POST", new Headers({ "Idempotency-Key": "8e03978e" }))).toBe(true);
    expect(isRetryableRequest("PATCH", new Headers({ "idempotency-key": "k" }))).toBe(true);
    expect(isRetryableRequest("POST", new Headers({ "Idempotency-Key": "" }))).toBe(false);
    expect(isRetryableRequest("POST", new Headers({ "X-Other": "1" }))).toBe(false);
  });
});

describe("shouldRetry", () => {
  const p = DEFAULT_RETRY_POLICY;

  test("defaults", () => {
    expect(p.attempts).toBe(2);
    expect(p.retryOn).toEqual({ connectFailure: true, refused: true, reset: true, statusCodes: [502, 503, 504], grpcStatuses: new Set() });
    expect(p.backoff).toEqual({ baseMs: 25, maxMs: 250 });
  });

  test("a trailers-only gRPC status: only the ones the policy lists, for any call, within the attempts", () => {
    const unavailable = { ...p, retryOn: { ...p.retryOn, grpcStatuses: new Set(["14"]) } };
    expect(shouldRetry(p, 0, { kind: "grpc-status", grpcStatus: "14" })).toBe(false);
    expect(shouldRetry(unavailable, 0, { kind: "grpc-status", grpcStatus: "14" }, false)).toBe(true);
    expect(shouldRetry(unavailable, 0, { kind: "grpc-status", grpcStatus: "13" })).toBe(false);
    expect(shouldRetry(unavailable, 2, { kind: "grpc-status", grpcStatus: "14" })).toBe(false);
  });

  test("never after the response started, whatever the policy", () => {
    expect(shouldRetry(p, 0, { kind: "response-started" })).toBe(false);
  });

  test("transport failures before any response byte", () => {
    for (const kind of ["connect-failure", "refused", "reset-before-response", "timeout-before-response"] as const) {
      expect(shouldRetry(p, 0, { kind })).toBe(true);
    }
  });

  test("each retryOn flag switches its outcome off", () => {
    const off = (o: Partial<RetryPolicy["retryOn"]>): RetryPolicy => ({ ...p, retryOn: { ...p.retryOn, ...o } });
    expect(shouldRetry(off({ connectFailure: false }), 0, { kind: "connect-failure" })).toBe(false);
    expect(shouldRetry(off({ refused: false }), 0, { kind: "refused" })).toBe(false);
    expect(shouldRetry(off({ reset: false }), 0, { kind: "reset-before-response" })).toBe(false);
    expect(shouldRetry(off({ reset: false }), 0, { kind: "timeout-before-response" })).toBe(false);
    expect(shouldRetry(off({ reset: false }), 0, { kind: "connect-failure" })).toBe(true);
  });

  test("status codes only when configured", () => {
    expect(shouldRetry(p, 0, { kind: "status", status: 502 })).toBe(true);
    expect(shouldRetry(p, 0, { kind: "status", status: 503 })).toBe(true);
    expect(shouldRetry(p, 0, { kind: "status", status: 504 })).toBe(true);
    expect(shouldRetry(p, 0, { kind: "status", status: 500 })).toBe(false);
    expect(shouldRetry(p, 0, { kind: "status", status: 429 })).toBe(false);
    expect(shouldRetry(p, 0, { kind: "status", status: 200 })).toBe(false);
    const only500 = { ...p, retryOn: { ...p.retryOn, statusCodes: [500] } };
    expect(shouldRetry(only500, 0, { kind: "status", status: 500 })).toBe(true);
    expect(shouldRetry(only500, 0, { kind: "status", status: 503 })).toBe(false);
  });

  test("attempts caps the number of retries", () => {
    const o: AttemptOutcome = { kind: "status", status: 503 };
    expect(shouldRetry(p, 0, o)).toBe(true);
    expect(shouldRetry(p, 1, o)).toBe(true);
    expect(shouldRetry(p, 2, o)).toBe(false);
    expect(shouldRetry(p, 3, o)).toBe(false);
    expect(shouldRetry({ ...p, attempts: 0 }, 0, { kind: "connect-failure" })).toBe(false);
  });

  test("non-idempotent requests retry only what the upstream never saw", () => {
    expect(shouldRetry(p, 0, { kind: "connect-failure" }, false)).toBe(true);
    expect(shouldRetry(p, 0, { kind: "refused" }, false)).toBe(true);
    expect(shouldRetry(p, 0, { kind: "reset-before-response" }, false)).toBe(false);
    expect(shouldRetry(p, 0, { kind: "timeout-before-response" }, false)).toBe(false);
    expect(shouldRetry(p, 0, { kind: "status", status: 503 }, false)).toBe(false);
  });
});

describe("backoffMs", () => {
  const p = DEFAULT_RETRY_POLICY;

  test("bounds follow min(max, base·2^attempt)", () => {
    expect(backoffMs(p, 0, () => 0)).toBe(0);
    expect(backoffMs(p, 0, () => 0.5)).toBe(12.5);
    expect(backoffMs(p, 1, () => 0.5)).toBe(25);
    expect(backoffMs(p, 2, () => 0.5)).toBe(50);
    expect(backoffMs(p, 3, () => 0.5)).toBe(100);
    expect(backoffMs(p, 4, () => 0.5)).toBe(125); // cap 250
    expect(backoffMs(p, 1000, () => 0.5)).toBe(125); // 2^1000 overflows to Infinity; still capped
  });

  test("seeded jitter stays in [0, cap) and its spread grows with attempts", () => {
    const rnd = seeded(42);
    const caps = [25, 50, 100, 200, 250, 250];
    for (let attempt = 0; attempt < caps.length; attempt++) {
      let max = 0;
      let sum = 0;
      for (let i = 0; i < 2000; i++) {
        const d = backoffMs(p, attempt, rnd);
        expect(d).toBeGreaterThanOrEqual(0);
        expect(d).toBeLessThan(caps[attempt]!);
        max = Math.max(max, d);
        sum += d;
      }
      // Full jitter: uniform, so the mean is about cap/2 and samples reach near the cap.
      expect(max).toBeGreaterThan(caps[attempt]! * 0.95);
      expect(sum / 2000).toBeCloseTo(caps[attempt]! / 2, -1);
    }
  });

  test("the same seed gives the same delays", () => {
    const a = seeded(7);
    const b = seeded(7);
    for (let i = 0; i < 10; i++) expect(backoffMs(p, i, a)).toBe(backoffMs(p, i, b));
  });
});

describe("RetryBudget", () => {
  test("defaults", () => {
    expect(DEFAULT_RETRY_BUDGET).toEqual({ ratio: 0.2, minRetriesPerSecond: 10, windowMs: 10_000, buckets: 10 });
  });

  test("100 requests in the window: 20% + the 10/s × 10 s floor = 120 retries, then refused", () => {
    const clock = new FakeClock(1_000);
    const budget = new RetryBudget(clock);
    for (let i = 0; i < 100; i++) budget.onRequest();
    expect(budget.remaining()).toBe(120);
    for (let i = 0; i < 120; i++) expect(budget.tryWithdraw()).toBe(true);
    expect(budget.tryWithdraw()).toBe(false);
    expect(budget.windowRetries()).toBe(120); // a refusal consumes nothing
    expect(budget.remaining()).toBe(0);
    // Five more requests earn exactly one more retry.
    for (let i = 0; i < 5; i++) budget.onRequest();
    expect(budget.tryWithdraw()).toBe(true);
    expect(budget.tryWithdraw()).toBe(false);
  });

  test("with no floor, only the ratio applies", () => {
    const budget = new RetryBudget(new FakeClock(), { ratio: 0.2, minRetriesPerSecond: 0, windowMs: 10_000, buckets: 10 });
    expect(budget.tryWithdraw()).toBe(false);
    for (let i = 0; i < 100; i++) budget.onRequest();
    let allowed = 0;
    while (budget.tryWithdraw()) allowed++;
    expect(allowed).toBe(20);
  });

  test("float error in ratio × requests does not lose a retry", () => {
    const budget = new RetryBudget(new FakeClock(), { ratio: 0.29, minRetriesPerSecond: 0, windowMs: 10_000, buckets: 10 });
    for (let i = 0; i < 100; i++) budget.onRequest(); // 0.29 × 100 = 28.999999999999996
    let allowed = 0;
    while (budget.tryWithdraw()) allowed++;
    expect(allowed).toBe(29);
  });

  test("traffic ages out bucket by bucket and is gone after the window", () => {
    const clock = new FakeClock(0);
    const budget = new RetryBudget(clock, { ratio: 0.2, minRetriesPerSecond: 0, windowMs: 10_000, buckets: 10 });
    for (let i = 0; i < 100; i++) budget.onRequest(); // bucket [0 s, 1 s)
    for (let i = 0; i < 20; i++) expect(budget.tryWithdraw()).toBe(true);
    expect(budget.tryWithdraw()).toBe(false);

    clock.advance(5_000);
    for (let i = 0; i < 50; i++) budget.onRequest(); // bucket [5 s, 6 s)
    expect(budget.windowRequests()).toBe(150);
    expect(budget.tryWithdraw()).toBe(true); // 21 ≤ 0.2 × 150 = 30

    clock.advance(4_999); // t = 9.999 s: still inside the first bucket's window
    expect(budget.windowRequests()).toBe(150);
    clock.advance(1); // t = 10 s: the first bucket (its 100 requests, 20 retries) leaves
    expect(budget.windowRequests()).toBe(50);
    expect(budget.windowRetries()).toBe(1);
    expect(budget.remaining()).toBe(9);

    clock.advance(10_000); // everything ages out
    expect(budget.windowRequests()).toBe(0);
    expect(budget.windowRetries()).toBe(0);
    expect(budget.tryWithdraw()).toBe(false);
  });

  test("the floor refills after the window with no traffic at all", () => {
    const clock = new FakeClock(0);
    const budget = new RetryBudget(clock, { ratio: 0.2, minRetriesPerSecond: 1, windowMs: 10_000, buckets: 10 });
    let allowed = 0;
    while (budget.tryWithdraw()) allowed++;
    expect(allowed).toBe(10);
    clock.advance(10_000);
    expect(budget.tryWithdraw()).toBe(true);
  });

  test("a clock going backwards does not corrupt the totals", () => {
    const clock = new FakeClock(5_000);
    const budget = new RetryBudget(clock, { ratio: 1, minRetriesPerSecond: 0, windowMs: 10_000, buckets: 10 });
    budget.onRequest();
    clock.advance(-3_000);
    budget.onRequest();
    expect(budget.windowRequests()).toBe(2);
    expect(budget.tryWithdraw()).toBe(true);
    expect(budget.tryWithdraw()).toBe(true);
    expect(budget.tryWithdraw()).toBe(false);
  });
});
