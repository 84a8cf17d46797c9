/**
 * The graces of a listener's retired mux sessions: after GOAWAY, streams a caller opened
 * before it heard it are still served until its grace ends. A drain asks when none is
 * pending (ended()): until then such a request may still arrive, and its service may
 * still call out through the sidecar.
 */
export class GoawayGraces {
  private readonly timers = new Set<Timer>();
  private waiters: (() => void)[] = [];

  /** A grace of `ms`, pending until `end` has run. */
  start(ms: number, end: () => void): void {
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      end();
      this.settleWaiters();
    }, ms);
    this.timers.add(timer);
  }

  /** Ends every grace now, without its end (the listener is closing every connection). */
  cancelAll(): void {
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    this.settleWaiters();
  }

  get pending(): boolean {
    return this.timers.size > 0;
  }

  /** Settles once no grace is pending: at once if none is. */
  ended(): Promise<void> {
    if (!this.pending) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  private settleWaiters(): void {
    if (this.pending) return;
    for (const waiter of this.waiters.splice(0)) waiter();
  }
}
