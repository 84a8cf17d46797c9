/** Counts requests in flight so a drain knows when the last one finished. */
export class InflightTracker {
  count = 0;
  private idle: (() => void)[] = [];
  start(): void {
    this.count++;
  }
  end(): void {
    if (--this.count === 0 && this.idle.length > 0) for (const w of this.idle.splice(0)) w();
  }
  /** Resolves once nothing is in flight, or after `ms`. */
  settle(ms: number): Promise<boolean> {
    if (this.count === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const t = setTimeout(() => resolve(false), ms);
      this.idle.push(() => {
        clearTimeout(t);
        resolve(true);
      });
    });
  }
}
