import { describe, expect, test } from "bun:test";
import {
  CircuitBreaker,
  DEFAULT_CIRCUIT_BREAKER_LIMITS,
  type OverflowReason,
  RESOURCE_KINDS,
  type ResourceKind,
} from "../../../src/proxy/resilience/circuit-breaker.ts";

const small = { maxConnections: 2, maxPendingRequests: 3, maxRequests: 4, maxRetries: 1 };

describe("CircuitBreaker", () => {
  test("defaults: Envoy's, with retries capped by the budget rather than at 3", () => {
    expect(DEFAULT_CIRCUIT_BREAKER_LIMITS).toEqual({
      maxConnections: 1024,
      maxPendingRequests: 1024,
      maxRequests: 1024,
      maxRetries: 1024,
    });
    const cb = new CircuitBreaker();
    expect(cb.remaining("retries")).toBe(1024);
    expect(cb.remaining("requests")).toBe(1024);
  });

  const cases: [ResourceKind, number, OverflowReason][] = [
    ["connections", 2, "max-connections"],
    ["pending", 3, "max-pending-requests"],
    ["requests", 4, "max-requests"],
    ["retries", 1, "max-retries"],
  ];
  for (const [kind, limit, reason] of cases) {
    test(`${kind}: acquire up to ${limit}, then refused with ${reason}`, () => {
      const cb = new CircuitBreaker(small);
      for (let i = 0; i < limit; i++) expect(cb.tryAcquire(kind)).toBe(true);
      expect(cb.usage(kind)).toBe(limit);
      expect(cb.tryAcquire(kind)).toBe(reason);
      expect(cb.tryAcquire(kind)).toBe(reason);
      expect(cb.usage(kind)).toBe(limit); // refusals take nothing
      expect(cb.overflows(kind)).toBe(2);
      expect(cb.isOpen(kind)).toBe(true);
      expect(cb.isOpen()).toBe(true);

      // Release frees exactly one slot.
      expect(cb.release(kind)).toBe(true);
      expect(cb.usage(kind)).toBe(limit - 1);
      expect(cb.remaining(kind)).toBe(1);
      expect(cb.isOpen()).toBe(false);
      expect(cb.tryAcquire(kind)).toBe(true);
      expect(cb.tryAcquire(kind)).toBe(reason);
    });
  }

  test("kinds are independent", () => {
    const cb = new CircuitBreaker(small);
    expect(cb.tryAcquire("retries")).toBe(true);
    expect(cb.tryAcquire("retries")).toBe("max-retries");
    expect(cb.tryAcquire("requests")).toBe(true);
    expect(cb.isOpen("requests")).toBe(false);
    expect(cb.isOpen("retries")).toBe(true);
    for (const k of RESOURCE_KINDS) expect(cb.usage(k)).toBe(k === "retries" || k === "requests" ? 1 : 0);
  });

  test("double release and release without acquire are guarded and counted", () => {
    const cb = new CircuitBreaker(small);
    expect(cb.release("requests")).toBe(false);
    expect(cb.usage("requests")).toBe(0);
    expect(cb.misuses).toBe(1);

    expect(cb.tryAcquire("requests")).toBe(true);
    expect(cb.release("requests")).toBe(true);
    expect(cb.release("requests")).toBe(false);
    expect(cb.usage("requests")).toBe(0);
    expect(cb.misuses).toBe(2);
    // The limit is not inflated by the bad releases.
    for (let i = 0; i < 4; i++) expect(cb.tryAcquire("requests")).toBe(true);
    expect(cb.tryAcquire("requests")).toBe("max-requests");
  });

  test("no leak over many acquire/release cycles", () => {
    const cb = new CircuitBreaker(small);
    for (let i = 0; i < 10_000; i++) {
      const r = cb.tryAcquire("requests");
      if (r === true) cb.release("requests");
    }
    expect(cb.usage("requests")).toBe(0);
    expect(cb.misuses).toBe(0);
  });

  test("lowering limits refuses new work while in-flight work drains", () => {
    const cb = new CircuitBreaker(small);
    for (let i = 0; i < 4; i++) cb.tryAcquire("requests");
    cb.setLimits({ ...small, maxRequests: 2 });
    expect(cb.remaining("requests")).toBe(0);
    expect(cb.tryAcquire("requests")).toBe("max-requests");
    cb.release("requests");
    cb.release("requests");
    expect(cb.tryAcquire("requests")).toBe("max-requests");
    cb.release("requests");
    expect(cb.tryAcquire("requests")).toBe(true);
  });

  test("a limit of 0 (or a bad value) switches the resource off", () => {
    const cb = new CircuitBreaker({ ...small, maxRetries: 0, maxPendingRequests: Number.NaN });
    expect(cb.tryAcquire("retries")).toBe("max-retries");
    expect(cb.tryAcquire("pending")).toBe("max-pending-requests");
    expect(cb.isOpen("retries")).toBe(true);
  });

  test("continuing(): a rebuilt destination's breaker counts what the old one holds, under its own limits", () => {
    const old = new CircuitBreaker(small);
    expect([old.tryAcquire("connections"), old.tryAcquire("connections")]).toEqual([true, true]);
    const next = CircuitBreaker.continuing(old, { ...small, maxConnections: 3 });
    expect(next.usage("connections")).toBe(2);
    expect([next.tryAcquire("connections"), next.tryAcquire("connections")]).toEqual([true, "max-connections"]);
    // A holder from before releases on the breaker it took its place from: the new one sees it.
    expect(old.release("connections")).toBe(true);
    expect(next.usage("connections")).toBe(2);
    expect(next.tryAcquire("connections")).toBe(true);
    // The old limits stay the old breaker's.
    expect(old.tryAcquire("connections")).toBe("max-connections");
  });
});
