import { beforeEach, describe, expect, test } from "bun:test";
import { FakeClock } from "../../../src/core/clock.ts";
import { Endpoint } from "../../../src/proxy/endpoint.ts";
import { DEFAULT_OUTLIER_CONFIG, OutlierDetector } from "../../../src/proxy/resilience/outlier.ts";
import { seeded } from "../../helpers/prng.ts";

function endpoints(n: number): Endpoint[] {
  return Array.from({ length: n }, (_, i) => new Endpoint({ address: `10.0.0.${i + 1}`, port: 8080, weight: 1 }));
}

function fail(d: OutlierDetector, ep: Endpoint, times: number): void {
  for (let i = 0; i < times; i++) d.onResult(ep, false);
}

describe("OutlierDetector", () => {
  let clock: FakeClock;
  let d: OutlierDetector;
  let eps: Endpoint[];
  let a: Endpoint;
  let b: Endpoint;

  beforeEach(() => {
    clock = new FakeClock(1_000);
    d = new OutlierDetector(clock);
    eps = endpoints(4);
    [a, b] = eps as [Endpoint, Endpoint];
    d.setEndpoints(eps);
  });

  test("defaults", () => {
    expect(DEFAULT_OUTLIER_CONFIG).toMatchObject({
      consecutiveFailures: 5,
      baseEjectionMs: 30_000,
      maxEjectionMs: 300_000,
      maxEjectionPercent: 50,
    });
  });

  test("5 consecutive failures eject for 30 s", () => {
    fail(d, a, 4);
    expect(d.isAvailable(a)).toBe(true);
    expect(a.ejectedUntil).toBe(0);
    fail(d, a, 1);
    expect(d.isAvailable(a)).toBe(false);
    expect(a.ejectedUntil).toBe(31_000);
    expect(d.totalEjections).toBe(1);
    expect(d.currentlyEjected).toBe(1);
  });

  test("a success in between resets the streak", () => {
    fail(d, a, 4);
    d.onResult(a, true);
    fail(d, a, 4);
    expect(d.isAvailable(a)).toBe(true);
    fail(d, a, 1);
    expect(d.isAvailable(a)).toBe(false);
  });

  test("failures on other endpoints do not add up", () => {
    for (let i = 0; i < 4; i++) for (const ep of eps) d.onResult(ep, false);
    expect(d.currentlyEjected).toBe(0);
  });

  test("returns when its time passes", () => {
    fail(d, a, 5);
    clock.advance(29_999);
    expect(d.isAvailable(a)).toBe(false);
    expect(d.healthy(eps)).not.toContain(a);
    clock.advance(1);
    expect(d.isAvailable(a)).toBe(true);
    expect(d.healthy(eps)).toBe(eps);
    expect(a.ejectedUntil).toBe(0);
    expect(d.currentlyEjected).toBe(0);
    expect(d.totalEjections).toBe(1);
  });

  test("results while ejected are ignored; the streak restarts on return", () => {
    fail(d, a, 5);
    fail(d, a, 20); // stragglers that were in flight
    expect(a.ejectedUntil).toBe(31_000);
    clock.advance(30_000);
    fail(d, a, 4);
    expect(d.isAvailable(a)).toBe(true);
    d.onResult(a, true);
    fail(d, a, 4);
    expect(d.isAvailable(a)).toBe(true);
  });

  test("ejection time grows 30 s → 60 s → 90 s … and caps at 300 s", () => {
    const expected = [30, 60, 90, 120, 150, 180, 210, 240, 270, 300, 300, 300].map((s) => s * 1000);
    for (const ms of expected) {
      fail(d, a, 5);
      expect(a.ejectedUntil - clock.now()).toBe(ms);
      clock.advance(ms); // back in service, then fails again at once
    }
    expect(d.totalEjections).toBe(expected.length);
  });

  test("the multiplier decays one step per 10 s back in service", () => {
    fail(d, a, 5);
    clock.advance(30_000);
    fail(d, a, 5);
    expect(a.ejectedUntil - clock.now()).toBe(60_000); // multiplier 2
    clock.advance(60_000 + 10_000); // one decay step
    fail(d, a, 5);
    expect(a.ejectedUntil - clock.now()).toBe(60_000); // 2 - 1 + 1
    clock.advance(60_000 + 60_000); // fully forgiven
    fail(d, a, 5);
    expect(a.ejectedUntil - clock.now()).toBe(30_000);
  });

  test("max-percent: 4 endpoints at 50% → at most 2 ejected", () => {
    expect(d.maxEjected()).toBe(2);
    for (const ep of eps) fail(d, ep, 5);
    expect(d.currentlyEjected).toBe(2);
    expect(d.overflowEjections).toBe(2);
    expect(d.healthy(eps)).toEqual([eps[2]!, eps[3]!]);
    // The refused ones keep their streak: one more failure ejects once room frees up.
    clock.advance(30_000);
    expect(d.currentlyEjected).toBe(0);
    d.onResult(eps[2]!, false);
    expect(d.isAvailable(eps[2]!)).toBe(false);
  });

  test("max-percent rounds down but allows one when there are ≥ 2 endpoints; never a lone one", () => {
    const at = (n: number, pct: number) => {
      const det = new OutlierDetector(clock, { ...DEFAULT_OUTLIER_CONFIG, maxEjectionPercent: pct });
      det.setEndpoints(endpoints(n));
      return det.maxEjected();
    };
    expect(at(1, 50)).toBe(0);
    expect(at(1, 100)).toBe(0);
    expect(at(2, 50)).toBe(1);
    expect(at(3, 50)).toBe(1);
    expect(at(5, 50)).toBe(2);
    expect(at(10, 10)).toBe(1);
    expect(at(3, 10)).toBe(1);
    expect(at(4, 100)).toBe(4);

    const solo = new OutlierDetector(clock);
    const [only] = endpoints(1) as [Endpoint];
    solo.setEndpoints([only]);
    fail(solo, only, 50);
    expect(solo.isAvailable(only)).toBe(true);
  });

  test("healthy() returns the same array when nothing is ejected, and a stable filtered one otherwise", () => {
    expect(d.healthy(eps)).toBe(eps);
    fail(d, b, 5);
    const h1 = d.healthy(eps);
    expect(h1).toEqual([eps[0]!, eps[2]!, eps[3]!]);
    expect(d.healthy(eps)).toBe(h1); // cached: no allocation per request
    const subset = eps.slice(1, 3);
    expect(d.healthy(subset)).toEqual([eps[2]!]);
    fail(d, a, 5);
    expect(d.healthy(eps)).toEqual([eps[2]!, eps[3]!]); // cache invalidated by the new ejection
  });

  test("setEndpoints keeps state for kept addresses and drops removed ones", () => {
    fail(d, a, 5);
    fail(d, b, 4);
    // A config push: new objects for the same four addresses.
    const next = endpoints(4);
    d.setEndpoints(next);
    expect(next[0]!.ejectedUntil).toBe(31_000); // still ejected
    expect(d.isAvailable(next[0]!)).toBe(false);
    expect(d.currentlyEjected).toBe(1);
    d.onResult(next[1]!, false); // b's streak of 4 carried over
    expect(d.isAvailable(next[1]!)).toBe(false);
    expect(d.currentlyEjected).toBe(2);

    // Removing an ejected endpoint drops its state and frees its slot.
    d.setEndpoints(next.slice(1));
    expect(d.currentlyEjected).toBe(1);
    fail(d, next[0]!, 5); // untracked now: ignored
    expect(d.totalEjections).toBe(2);
    // A newcomer at a removed address starts clean.
    const again = endpoints(1)[0]!;
    d.setEndpoints([again, ...next.slice(1)]);
    expect(again.ejectedUntil).toBe(0);
    fail(d, again, 4);
    expect(d.isAvailable(again)).toBe(true);
  });

  test("seeded random traffic: never more than the cap ejected, and the counters agree", () => {
    const rnd = seeded(1234);
    const many = endpoints(10);
    d.setEndpoints(many);
    for (let step = 0; step < 20_000; step++) {
      const ep = many[Math.floor(rnd() * many.length)]!;
      // Endpoints 0-5 are bad (90% failures), the rest good (1%).
      const bad = many.indexOf(ep) < 6;
      d.onResult(ep, rnd() >= (bad ? 0.9 : 0.01));
      clock.advance(Math.floor(rnd() * 20));
      const healthy = d.healthy(many);
      expect(many.length - healthy.length).toBe(d.currentlyEjected);
      expect(d.currentlyEjected).toBeLessThanOrEqual(5);
    }
    expect(d.totalEjections).toBeGreaterThan(5);
  });
});
