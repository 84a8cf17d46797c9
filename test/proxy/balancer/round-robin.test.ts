import { describe, expect, test } from "bun:test";
import { RoundRobinBalancer } from "../../../src/proxy/balancer/round-robin.ts";
import type { Endpoint } from "../../../src/proxy/endpoint.ts";
import { endpoints, noHeaders, tally } from "./helpers.ts";

describe("round robin", () => {
  test("equal weights rotate exactly", () => {
    const eps = endpoints(1, 1, 1);
    const rr = new RoundRobinBalancer();
    const seq = Array.from({ length: 300 }, () => rr.pick(eps, noHeaders));
    for (let i = 0; i < 300; i++) expect(seq[i]).toBe(eps[i % 3]!);
  });

  test("5:1:1 follows nginx's smooth sequence and is exact over 700 picks", () => {
    const [a, b, c] = endpoints(5, 1, 1) as [Endpoint, Endpoint, Endpoint];
    const rr = new RoundRobinBalancer();
    const names = new Map([[a, "a"], [b, "b"], [c, "c"]]);
    const seq = Array.from({ length: 700 }, () => names.get(rr.pick([a, b, c], noHeaders)!));
    expect(seq.slice(0, 7).join(" ")).toBe("a a b a c a a");
    expect(seq.join("")).toBe("aabacaa".repeat(100));
    expect(seq.join("")).not.toContain("aaaaa");
  });

  test("removing an endpoint mid-way keeps the rest balanced", () => {
    const eps = endpoints(1, 1, 1, 1);
    const rr = new RoundRobinBalancer();
    tally(() => rr.pick(eps, noHeaders), 101); // stop mid-rotation
    const rest = [eps[0]!, eps[2]!, eps[3]!];
    const counts = tally(() => rr.pick(rest, noHeaders), 300);
    expect(counts.get(eps[1]!)).toBeUndefined();
    // The cut lands mid-rotation, so a 300-pick window can be off by one; never more.
    for (const e of rest) expect(Math.abs(counts.get(e)! - 100)).toBeLessThanOrEqual(1);
    // And it keeps rotating: no endpoint twice before the others had a turn.
    const seq = Array.from({ length: 30 }, () => rr.pick(rest, noHeaders));
    for (let i = 0; i + 3 <= seq.length; i += 3) expect(new Set(seq.slice(i, i + 3)).size).toBe(3);
  });

  test("weighted state survives removal and re-adding", () => {
    const [a, b, c] = endpoints(2, 1, 1) as [Endpoint, Endpoint, Endpoint];
    const rr = new RoundRobinBalancer();
    tally(() => rr.pick([a, b, c], noHeaders), 3);
    const counts = tally(() => rr.pick([a, c], noHeaders), 300);
    expect(Math.abs(counts.get(a)! - 200)).toBeLessThanOrEqual(1);
    expect(Math.abs(counts.get(c)! - 100)).toBeLessThanOrEqual(1);
    const back = tally(() => rr.pick([a, b, c], noHeaders), 400);
    // Within one smooth cycle of exact (the offset from the removal is bounded by the total weight).
    expect(Math.abs(back.get(a)! - 200)).toBeLessThanOrEqual(2);
    expect(Math.abs(back.get(b)! - 100)).toBeLessThanOrEqual(2);
    expect(Math.abs(back.get(c)! - 100)).toBeLessThanOrEqual(2);
  });

  test("weight 0 never picked; empty or all-zero gives undefined", () => {
    const [a, z, b] = endpoints(1, 0, 1) as [Endpoint, Endpoint, Endpoint];
    const rr = new RoundRobinBalancer();
    const counts = tally(() => rr.pick([a, z, b], noHeaders), 100);
    expect(counts.get(z)).toBeUndefined();
    expect(rr.pick([], noHeaders)).toBeUndefined();
    expect(rr.pick([z], noHeaders)).toBeUndefined();
  });
});
