/** Time and randomness are injected so resilience logic runs on a fake clock in tests. */
export interface Clock {
  /** Milliseconds, monotonic enough for timeouts and intervals. */
  now(): number;
}

export const systemClock: Clock = { now: () => performance.now() };

export type Random = () => number;

export class FakeClock implements Clock {
  constructor(private t = 0) {}
  now(): number {
    return this.t;
  }
  advance(ms: number): void {
    this.t += ms;
  }
}
