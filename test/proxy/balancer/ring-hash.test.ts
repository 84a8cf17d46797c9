import { describe, expect, test } from "bun:test";
import { cookieValue, RingHashBalancer } from "../../../src/proxy/balancer/ring-hash.ts";
import type { Endpoint } from "../../../src/proxy/endpoint.ts";
import { endpoints, headers, noHeaders, seeded, tally } from "./helpers.ts";

const keys = Array.from({ length: 1000 }, (_, i) => `user-${i}`);
const byHeader = (b: RingHashBalancer, eps: readonly Endpoint[], key: string) => b.pick(eps, headers({ "x-user": key }))!;

describe("ring hash", () => {
  test("the same header value always reaches the same endpoint", () => {
    const eps = endpoints(1, 1, 1, 1);
    const b = new RingHashBalancer({ header: "x-user" }, seeded(1));
    const first = byHeader(b, eps, "alice");
    for (let i = 0; i < 50; i++) expect(byHeader(b, eps, "alice")).toBe(first);
    // A fresh balancer (e.g. another proxy, or a rebuilt ring) agrees: points hash from addresses.
    expect(byHeader(new RingHashBalancer({ header: "x-user" }, seeded(2)), [...eps].reverse(), "alice").key).toBe(first.key);
  });

  test("1,000 keys spread within ±25% over 4 equal endpoints", () => {
    const eps = endpoints(1, 1, 1, 1);
    const b = new RingHashBalancer({ header: "x-user" }, seeded(3));
    let i = 0;
    const counts = tally(() => byHeader(b, eps, keys[i++]!), 1000);
    for (const e of eps) expect(Math.abs(counts.get(e)! - 250)).toBeLessThanOrEqual(62);
  });

  test("cookie mode, and header before cookie", () => {
    const eps = endpoints(1, 1, 1, 1);
    const b = new RingHashBalancer({ header: "x-user", cookie: "session" }, seeded(4));
    const viaHeader = byHeader(b, eps, "abc123");
    const viaCookie = (c: string) => b.pick(eps, headers({ cookie: c }))!;
    expect(viaCookie("theme=dark; session=abc123; lang=en")).toBe(viaHeader);
    expect(viaCookie("session=abc123")).toBe(viaHeader);
    const spread = new Set(keys.slice(0, 50).map((k) => viaCookie(`a=1; session=${k}`)));
    expect(spread.size).toBe(4);
    expect(b.pick(eps, headers({ "x-user": "abc123", cookie: "session=zzz" }))).toBe(viaHeader);
  });

  test("cookieValue parses exact names only", () => {
    expect(cookieValue("a=1; session=xyz; b=2", "session")).toBe("xyz");
    expect(cookieValue("mysession=1; session=2", "session")).toBe("2");
    expect(cookieValue("session_id=1", "session")).toBeNull();
    expect(cookieValue("session=", "session")).toBeNull();
    expect(cookieValue(null, "session")).toBeNull();
  });

  test("removing one of 4 endpoints moves only the keys it owned", () => {
    const eps = endpoints(1, 1, 1, 1);
    const b = new RingHashBalancer({ header: "x-user" }, seeded(5));
    const before = keys.map((k) => byHeader(b, eps, k));
    const removed = eps[2]!;
    const rest = eps.filter((e) => e !== removed);
    const after = keys.map((k) => byHeader(b, rest, k));
    let moved = 0;
    keys.forEach((_, i) => {
      if (before[i] === removed) {
        expect(after[i]).not.toBe(removed);
        moved++;
      } else expect(after[i]).toBe(before[i]!);
    });
    expect(moved).toBeGreaterThan(150);
    // Its keys spread over the survivors rather than all landing on one neighbour.
    expect(new Set(after.filter((_, i) => before[i] === removed)).size).toBe(3);
  });

  test("weights 2:1 give ~2:1", () => {
    const eps = endpoints(2, 1);
    const b = new RingHashBalancer({ header: "x-user" }, seeded(6));
    let i = 0;
    const counts = tally(() => byHeader(b, eps, keys[i++]!), 1000);
    expect(counts.get(eps[0]!)! / counts.get(eps[1]!)!).toBeCloseTo(2, 0);
  });

  test("without a key it still picks, at random by weight", () => {
    const eps = endpoints(1, 1, 0);
    const b = new RingHashBalancer({ header: "x-user" }, seeded(7));
    const counts = tally(() => b.pick(eps, noHeaders), 2000);
    expect(counts.get(eps[2]!)).toBeUndefined();
    expect(counts.get(eps[0]!)! / 2000).toBeCloseTo(0.5, 1);
  });

  test("weight 0 endpoints own no points; empty and all-zero give undefined", () => {
    const eps = endpoints(1, 0, 1);
    const b = new RingHashBalancer({ header: "x-user" }, seeded(8));
    expect(keys.some((k) => byHeader(b, eps, k) === eps[1])).toBe(false);
    expect(b.pick([], headers({ "x-user": "a" }))).toBeUndefined();
    expect(b.pick([eps[1]!], headers({ "x-user": "a" }))).toBeUndefined();
  });

  test("the ring is reused for the same set, even in a new array", () => {
    const eps = endpoints(1, 1, 1);
    const b = new RingHashBalancer({ header: "x-user" }, seeded(9));
    byHeader(b, eps, "k");
    const ring = (b as unknown as { ring: unknown }).ring;
    byHeader(b, eps, "k2");
    byHeader(b, [...eps], "k3");
    expect((b as unknown as { ring: unknown }).ring).toBe(ring);
    byHeader(b, eps.slice(1), "k4");
    expect((b as unknown as { ring: unknown }).ring).not.toBe(ring);
  });

  test("minRingSize raises points for tiny weights", () => {
    const eps = endpoints(0.01, 0.01);
    const coarse = new RingHashBalancer({ header: "x-user" }, seeded(10));
    const fine = new RingHashBalancer({ header: "x-user", minRingSize: 2048 }, seeded(10));
    byHeader(coarse, eps, "k");
    byHeader(fine, eps, "k");
    const size = (b: RingHashBalancer) => (b as unknown as { ring: { hashes: Uint32Array } }).ring.hashes.length;
    expect(size(coarse)).toBe(2);
    expect(size(fine)).toBe(2048);
  });
});
