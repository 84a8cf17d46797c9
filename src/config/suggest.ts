/**
 * "Did you mean" hints for misspelled field names and kinds: a typo should point at the
 * intended word, not just say "unknown".
 */

/** Optimal-string-alignment distance, so a swapped pair ("weigth") counts as one edit. */
function distance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => [i]);
  for (let j = 1; j <= b.length; j++) d[0]![j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let best = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) best = Math.min(best, d[i - 2]![j - 2]! + 1);
      d[i]![j] = best;
    }
  }
  return d[a.length]![b.length]!;
}

/** The closest candidate within a couple of edits (case-insensitive), if any. */
export function closest(word: string, candidates: readonly string[]): string | undefined {
  // A truncated name ("proto") means the longer one, even when a shorter one is fewer edits away.
  const lower = word.toLowerCase();
  const extended = candidates.filter((c) => lower.length >= 3 && c.toLowerCase().startsWith(lower) && c.length > word.length);
  if (extended.length > 0) return extended.sort((a, b) => a.length - b.length)[0];
  const limit = word.length <= 4 ? 1 : 2;
  let best: string | undefined;
  let bestDistance = limit + 1;
  for (const candidate of candidates) {
    const dist = distance(lower, candidate.toLowerCase());
    if (dist < bestDistance) [best, bestDistance] = [candidate, dist];
  }
  return best;
}

/** ` (did you mean "x"?)` or "". */
export function didYouMean(word: string, candidates: readonly string[]): string {
  const hit = closest(word, candidates);
  return hit === undefined ? "" : ` (did you mean "${hit}"?)`;
}
