/**
 * Reconnect delays: full jitter over a doubling cap, so a restarted control plane is not
 * stampeded. The default cap is short (5 s): once the control plane is back, a proxy
 * should pick up changes within seconds, and jitter already spreads the load.
 */
export class Backoff {
  private attempt = 0;
  constructor(private baseMs = 250, private maxMs = 5_000, private random: () => number = Math.random) {}

  next(): number {
    const cap = Math.min(this.maxMs, this.baseMs * 2 ** this.attempt);
    this.attempt = Math.min(this.attempt + 1, 30);
    return this.random() * cap;
  }

  reset(): void {
    this.attempt = 0;
  }
}
