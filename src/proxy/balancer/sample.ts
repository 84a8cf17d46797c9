import type { Random } from "../../core/clock.ts";
import type { Endpoint } from "../endpoint.ts";

/** Usable weight. Zero, negative, NaN and Infinity all mean "no traffic", so a bad spec can't skew sums. */
export function weightOf(e: Endpoint): number {
  const w = e.weight;
  return w > 0 && w < Infinity ? w : 0;
}

/**
 * Weighted random draws for the P2C balancers. Results go to `first`/`second` instead of a
 * returned pair so a pick allocates nothing. The weight total is cached per candidates array
 * (identity + length): proxies pass the same healthy-list array until the set changes, and
 * when all weights are equal (the common case) a draw is O(1) index math rather than a scan.
 */
export class WeightedSampler {
  first: Endpoint | undefined = undefined;
  second: Endpoint | undefined = undefined;
  private seen: readonly Endpoint[] | undefined = undefined;
  private seenLength = -1;
  private total = 0;
  /** Candidates with weight > 0. */
  private count = 0;
  /** Every candidate has the same positive weight. */
  private uniform = false;

  constructor(private readonly random: Random) {}

  /** One candidate drawn with probability proportional to weight; undefined when none has weight. */
  one(candidates: readonly Endpoint[]): Endpoint | undefined {
    this.summarize(candidates);
    if (this.count === 0) return undefined;
    if (this.uniform) return candidates[this.index(candidates.length)];
    return candidates[this.scan(candidates, this.random() * this.total, -1)];
  }

  /**
   * Draws two distinct candidates, weighted, without replacement into `first` and `second`
   * (the same endpoint twice only when just one has weight). False when none has weight.
   */
  two(candidates: readonly Endpoint[]): boolean {
    this.summarize(candidates);
    if (this.count === 0) {
      this.first = this.second = undefined;
      return false;
    }
    let i: number;
    let j: number;
    if (this.count === 1) {
      i = j = this.scan(candidates, 0, -1);
    } else if (this.uniform) {
      const n = candidates.length;
      i = this.index(n);
      j = this.index(n - 1);
      if (j >= i) j++; // draw from the other n-1 slots: distinct without retry loops
    } else {
      i = this.scan(candidates, this.random() * this.total, -1);
      j = this.scan(candidates, this.random() * (this.total - weightOf(candidates[i]!)), i);
    }
    this.first = candidates[i];
    this.second = candidates[j];
    return true;
  }

  private index(n: number): number {
    return Math.min(n - 1, Math.floor(this.random() * n));
  }

  /** Index whose cumulative-weight interval holds `r`, skipping `exclude` and weightless ones. */
  private scan(candidates: readonly Endpoint[], r: number, exclude: number): number {
    let last = -1;
    for (let i = 0; i < candidates.length; i++) {
      if (i === exclude) continue;
      const w = weightOf(candidates[i]!);
      if (w === 0) continue;
      if (r < w) return i;
      r -= w;
      last = i;
    }
    return last; // float rounding ran past the end: the last weighted one owns the remainder
  }

  private summarize(candidates: readonly Endpoint[]): void {
    if (candidates === this.seen && candidates.length === this.seenLength) return;
    let total = 0;
    let count = 0;
    let firstWeight = 0;
    let uniform = true;
    for (const e of candidates) {
      const w = weightOf(e);
      if (w === 0) {
        uniform = false;
        continue;
      }
      if (count === 0) firstWeight = w;
      else if (w !== firstWeight) uniform = false;
      total += w;
      count++;
    }
    this.seen = candidates;
    this.seenLength = candidates.length;
    this.total = total;
    this.count = count;
    this.uniform = uniform;
  }
}
