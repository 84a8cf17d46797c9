/**
 * setTimeout's longest delay, 2^31 − 1 ms (about 24.8 days): a longer one fires at once,
 * so a later moment is reached in steps (a timer that finds it early arms again).
 */
export const LONGEST_TIMER_MS = 2 ** 31 - 1;

/** `ms` as a delay setTimeout keeps: at least `shortestMs`, at most LONGEST_TIMER_MS. */
export function timerDelay(ms: number, shortestMs = 0): number {
  return Math.min(LONGEST_TIMER_MS, Math.max(shortestMs, ms));
}
