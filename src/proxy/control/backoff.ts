/** Reconnect delays: full jitter over a doubling cap, so a restarted control plane is not stampeded. */
export class Backoff {
  private attempt = 0;
  constructor(private baseMs = 500, private maxMs = 30_000, private random: () => number = Math.random) {}

  next(): number {
    const cap = Math.min(this.maxMs, this.baseMs * 2 ** this.attempt);
    this.attempt = Math.min(this.attempt + 1, 30);
    return this.random() * cap;
  }

  reset(): void {
    this.attempt = 0;
  }
}
