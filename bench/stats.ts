/** Small statistics over runs and latency samples. */

/** Nearest-rank percentile of ascending samples; NaN when there are none. */
export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1]!;
}

/** Median: robust to one run disturbed by a noisy neighbour on a shared machine. */
export function median(values: number[]): number {
  return percentile([...values].sort((a, b) => a - b), 50);
}

export const sum = (values: number[]) => values.reduce((a, b) => a + b, 0);
