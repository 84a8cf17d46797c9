/**
 * Warnings about something that can happen many times a second (a refused TLS peer, a
 * listener at its limit): said at most once per interval for each key, the rest left to
 * a counter the warning names. Keys are bounded: a flood of distinct ones only starts the
 * memory of what was said afresh.
 */
const MAX_KEYS = 1024;

export class ThrottledWarnings {
  private readonly saidAt = new Map<string, number>();

  constructor(private readonly everyMs = 10_000) {}

  /** Whether a warning for `key` is due now; if so, the next is not before `everyMs`. */
  due(key: string, now = performance.now()): boolean {
    const last = this.saidAt.get(key);
    if (last !== undefined && now - last < this.everyMs) return false;
    if (last === undefined && this.saidAt.size >= MAX_KEYS) this.saidAt.clear();
    this.saidAt.set(key, now);
    return true;
  }
}
