/** One bounded load run, whichever generator produced it. */
export interface LoadResult {
  requests: number;
  durationS: number;
  reqPerSec: number;
  p50Ms: number;
  p99Ms: number;
  /** Connect, read, write errors and timeouts. */
  errors: number;
  /** Responses with status 400 or above (wrk: "Non-2xx or 3xx responses"). */
  non2xx: number;
}
