import { Endpoint, type PickContext } from "../../../src/proxy/endpoint.ts";

export { seeded } from "../../helpers/prng.ts";

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
