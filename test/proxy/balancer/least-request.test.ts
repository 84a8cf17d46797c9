import { describe, expect, test } from "bun:test";
import { LeastRequestBalancer } from "../../../src/proxy/balancer/least-request.ts";
import type { Endpoint } from "../../../src/proxy/endpoint.ts";
import { endpoints, noHeaders, seeded, tally, underLoad } from "./helpers.ts";

describe("least request (P2C)", () => {
  test("the idle endpoint wins whenever both are sampled", () => {
    const [idle, busy] = endpoints(1, 1) as [Endpoint, Endpoint];
    busy.inflight = 10;
    const lr = new LeastRequestBalancer(seeded(1));
    // Two candidates: both are always sampled, so the busy one is never chosen.
    expect(tally(() => lr.pick([idle, busy], noHeaders), 1000).get(busy)).toBeUndefined();
  });

  test("with more candidates the busy one only wins when paired with another busy one", () => {
    const eps = endpoints(1, 1, 1, 1);
    eps[0]!.inflight = 10;
    const lr = new LeastRequestBalancer(seeded(2));
    expect(tally(() => lr.pick(eps, noHeaders), 4000).get(eps[0]!)).toBeUndefined();
  });

  test("the two samples are distinct", () => {
    const eps = endpoints(1, 1, 1);
    eps[0]!.inflight = eps[1]!.inflight = 5; // eps[2] must win every draw it is in: 2/3 of picks
    const lr = new LeastRequestBalancer(seeded(3));
    const n = tally(() => lr.pick(eps, noHeaders), 3000).get(eps[2]!)!;
    expect(n / 3000).toBeCloseTo(2 / 3, 1);
  });

  test("spread over 4 endpoints under load is within ±10% of even", () => {
    const eps = endpoints(1, 1, 1, 1);
    const lr = new LeastRequestBalancer(seeded(4));
    const random = seeded(5);
    const counts = underLoad(() => lr.pick(eps, noHeaders), 10_000, () => 1 + Math.floor(random() * 20));
    for (const e of eps) expect(Math.abs(counts.get(e)! - 2500)).toBeLessThan(250);
  });

  test("weights 3:1 give ~3:1, idle and under load", () => {
    const [heavy, light] = endpoints(3, 1) as [Endpoint, Endpoint];
    const lr = new LeastRequestBalancer(seeded(6));
    const idle = tally(() => lr.pick([heavy, light], noHeaders), 8000);
    expect(idle.get(heavy)! / idle.get(light)!).toBeCloseTo(3, 0);
    // Enough concurrency (~20 in flight) that whole requests can split 3:1.
    const random = seeded(60);
    const loaded = underLoad(() => lr.pick([heavy, light], noHeaders), 8000, () => 1 + Math.floor(random() * 40));
    expect(loaded.get(heavy)! / loaded.get(light)!).toBeCloseTo(3, 0);
  });

  test("weights among more candidates", () => {
    const eps = endpoints(3, 1, 1, 1);
    const lr = new LeastRequestBalancer(seeded(7));
    const random = seeded(70);
    const counts = underLoad(() => lr.pick(eps, noHeaders), 12_000, () => 1 + Math.floor(random() * 40));
    expect(counts.get(eps[0]!)! / 12_000).toBeGreaterThan(0.4);
    expect(counts.get(eps[0]!)! / 12_000).toBeLessThan(0.6);
  });

  test("one candidate, weight 0, empty", () => {
    const [a, zero] = endpoints(1, 0) as [Endpoint, Endpoint];
    const lr = new LeastRequestBalancer(seeded(8));
    a.inflight = 100;
    expect(lr.pick([a], noHeaders)).toBe(a);
    expect(tally(() => lr.pick([zero, a], noHeaders), 200).get(zero)).toBeUndefined();
    expect(lr.pick([zero], noHeaders)).toBeUndefined();
    expect(lr.pick([], noHeaders)).toBeUndefined();
  });
});
