import { describe, expect, test } from "bun:test";
import { FakeClock } from "../../../src/core/clock.ts";
import { EwmaBalancer, recordLatency } from "../../../src/proxy/balancer/ewma.ts";
import type { Endpoint } from "../../../src/proxy/endpoint.ts";
import { endpoints, noHeaders, seeded, tally, underLoad } from "./helpers.ts";

describe("recordLatency", () => {
  test("the first sample sets the estimate", () => {
    const clock = new FakeClock(5_000);
    const [e] = endpoints(1) as [Endpoint];
    recordLatency(e, 42, clock);
    expect(e.ewmaMs).toBe(42);
    expect(e.ewmaAt).toBe(5_000);
  });

  test("a higher sample replaces the estimate at once (peak)", () => {
    const clock = new FakeClock();
    const [e] = endpoints(1) as [Endpoint];
    recordLatency(e, 10, clock);
    clock.advance(1);
    recordLatency(e, 250, clock);
    expect(e.ewmaMs).toBe(250);
    expect(e.ewmaAt).toBe(1);
  });

  test("a lower sample decays towards it with w = exp(-elapsed/decay)", () => {
    const clock = new FakeClock();
    const [e] = endpoints(1) as [Endpoint];
    recordLatency(e, 100, clock);
    clock.advance(10_000); // one time constant
    recordLatency(e, 20, clock);
    const w = Math.exp(-1);
    expect(e.ewmaMs).toBe(100 * w + 20 * (1 - w));
    clock.advance(5_000);
    const before = e.ewmaMs;
    recordLatency(e, 20, clock, 5_000); // custom decay
    expect(e.ewmaMs).toBe(before * w + 20 * (1 - w));
    // No time elapsed: w = 1, a lower sample changes nothing.
    recordLatency(e, 1, clock);
    expect(e.ewmaMs).toBe(before * w + 20 * (1 - w));
  });

  test("long idle lets a low sample take over almost fully", () => {
    const clock = new FakeClock();
    const [e] = endpoints(1) as [Endpoint];
    recordLatency(e, 100, clock);
    clock.advance(1_000_000);
    recordLatency(e, 7, clock);
    expect(e.ewmaMs).toBeCloseTo(7, 10);
  });
});

describe("ewma balancer", () => {
  test("a fast endpoint gets > 80% of picks against a slow one, even under load", () => {
    const clock = new FakeClock();
    const [fast, slow] = endpoints(1, 1) as [Endpoint, Endpoint];
    recordLatency(fast, 5, clock);
    recordLatency(slow, 100, clock);
    const b = new EwmaBalancer(clock, seeded(1));
    const random = seeded(2);
    // Up to ~40 in flight: the fast one's queue grows until 5·(n+1) > 100 spills a few over.
    const counts = underLoad(() => b.pick([fast, slow], noHeaders), 10_000, () => 1 + Math.floor(random() * 80));
    expect(counts.get(fast)! / 10_000).toBeGreaterThan(0.8);
    expect(counts.get(slow)).toBeGreaterThan(0);
  });

  test("among many, P2C keeps a slow endpoint out of every draw it shares with a faster one", () => {
    const clock = new FakeClock();
    const eps = endpoints(1, 1, 1, 1);
    eps.forEach((e, i) => recordLatency(e, i === 3 ? 100 : 5, clock));
    const b = new EwmaBalancer(clock, seeded(8));
    expect(tally(() => b.pick(eps, noHeaders), 2000).get(eps[3]!)).toBeUndefined();
  });

  test("inflight counts: a fast endpoint with a long queue loses to an idle slower one", () => {
    const clock = new FakeClock();
    const [fast, slow] = endpoints(1, 1) as [Endpoint, Endpoint];
    recordLatency(fast, 5, clock);
    recordLatency(slow, 20, clock);
    const b = new EwmaBalancer(clock, seeded(3));
    expect(b.pick([fast, slow], noHeaders)).toBe(fast);
    fast.inflight = 4; // cost 25 > 20
    expect(b.pick([fast, slow], noHeaders)).toBe(slow);
  });

  test("an endpoint without samples costs like the average, so it gets traffic", () => {
    const clock = new FakeClock();
    const [a, b, fresh] = endpoints(1, 1, 1) as [Endpoint, Endpoint, Endpoint];
    recordLatency(a, 10, clock);
    recordLatency(b, 30, clock);
    const bal = new EwmaBalancer(clock, seeded(4));
    const counts = tally(() => bal.pick([a, b, fresh], noHeaders), 3000);
    // fresh (20) beats b (30) and loses to a (10): it wins exactly the draws pairing it with b.
    expect(counts.get(fresh)! / 3000).toBeCloseTo(1 / 3, 1);
    expect(counts.get(b)).toBeUndefined();
  });

  test("with no samples anywhere it balances on inflight", () => {
    const clock = new FakeClock();
    const eps = endpoints(1, 1);
    eps[0]!.inflight = 3;
    const bal = new EwmaBalancer(clock, seeded(5));
    expect(tally(() => bal.pick(eps, noHeaders), 100).get(eps[1]!)).toBe(100);
  });

  test("a stale slow estimate decays on read, so the endpoint is probed again", () => {
    const clock = new FakeClock();
    const [fast, slow] = endpoints(1, 1) as [Endpoint, Endpoint];
    recordLatency(slow, 100, clock);
    recordLatency(fast, 5, clock);
    const bal = new EwmaBalancer(clock, seeded(6));
    expect(bal.pick([fast, slow], noHeaders)).toBe(fast);
    clock.advance(29_000); // slow reads as 100·e^-2.9 ≈ 5.50, above fast's fresh 5
    recordLatency(fast, 5, clock);
    expect(bal.pick([fast, slow], noHeaders)).toBe(fast);
    clock.advance(1_000); // slow reads as 100·e^-3 ≈ 4.98, below fast's fresh 5
    recordLatency(fast, 5, clock);
    expect(bal.pick([fast, slow], noHeaders)).toBe(slow);
  });

  test("weight 0 and empty", () => {
    const clock = new FakeClock();
    const [a, zero] = endpoints(1, 0) as [Endpoint, Endpoint];
    const bal = new EwmaBalancer(clock, seeded(7));
    recordLatency(a, 500, clock);
    expect(tally(() => bal.pick([zero, a], noHeaders), 100).get(a)).toBe(100);
    expect(bal.pick([zero], noHeaders)).toBeUndefined();
    expect(bal.pick([], noHeaders)).toBeUndefined();
  });
});
