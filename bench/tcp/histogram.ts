/**
 * Round-trip times in whole microseconds, counted in buckets: fixed memory whatever the
 * count (a 5 s cell at 100k round trips a second would be 500k samples), exact to 1 µs
 * up to LIMIT_US; anything longer counts in the last bucket and as the maximum.
 */
const LIMIT_US = 1_000_000;

export class Histogram {
  private readonly counts = new Uint32Array(LIMIT_US + 1);
  count = 0;
  maxUs = 0;

  record(us: number): void {
    const bucket = Math.min(LIMIT_US, Math.max(0, Math.round(us)));
    this.counts[bucket]!++;
    this.count++;
    if (us > this.maxUs) this.maxUs = us;
  }

  reset(): void {
    this.counts.fill(0);
    this.count = 0;
    this.maxUs = 0;
  }

  /** Nearest-rank percentile, µs (as bench/stats.ts computes it over samples); NaN when empty. */
  percentile(p: number): number {
    if (this.count === 0) return NaN;
    const rank = Math.min(this.count, Math.max(1, Math.ceil((p / 100) * this.count)));
    let seen = 0;
    for (let us = 0; us <= LIMIT_US; us++) {
      seen += this.counts[us]!;
      if (seen >= rank) return us === LIMIT_US ? this.maxUs : us;
    }
    return this.maxUs;
  }
}
