import type { Random } from "../../../src/core/clock.ts";
import { Endpoint, type PickContext } from "../../../src/proxy/endpoint.ts";

/** mulberry32: a tiny seeded PRNG so balancer tests are deterministic. */
export function seeded(seed: number): Random {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function endpoints(...weights: number[]): Endpoint[] {
  return weights.map((weight, i) => new Endpoint({ address: `10.0.0.${i + 1}`, port: 8080, weight }));
}

export const noHeaders: PickContext = { header: () => null };

export function headers(h: Record<string, string>): PickContext {
  return { header: (name) => h[name.toLowerCase()] ?? null };
}

/** Picks `n` times and counts how often each endpoint was chosen. */
export function tally(pick: () => Endpoint | undefined, n: number): Map<Endpoint, number> {
  const counts = new Map<Endpoint, number>();
  for (let i = 0; i < n; i++) {
    const e = pick();
    if (e === undefined) throw new Error("no endpoint picked");
    counts.set(e, (counts.get(e) ?? 0) + 1);
  }
  return counts;
}

/**
 * Picks under simulated load: each pick raises the endpoint's inflight, and the request
 * completes `hold` picks later. Returns the pick counts.
 */
export function underLoad(pick: () => Endpoint | undefined, n: number, hold: (e: Endpoint) => number): Map<Endpoint, number> {
  const due: Endpoint[][] = [];
  return tally(() => {
    const done = due.shift();
    if (done) for (const e of done) e.inflight--;
    const e = pick();
    if (e) {
      e.inflight++;
      const at = Math.max(0, hold(e) - 1);
      while (due.length <= at) due.push([]);
      due[at]!.push(e);
    }
    return e;
  }, n);
}
