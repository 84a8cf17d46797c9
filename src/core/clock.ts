/** Time and randomness are injected so resilience logic runs on a fake clock in tests. */
export interface Clock {
  /** Milliseconds, monotonic enough for timeouts and intervals. */
  now(): number;
}

/**
 * Within a socket read (readEvent()), the time the read was handed over; anywhere else,
 * a fresh read. A request asks for the time about six times (latency, deadline, retry
 * budget, pool idle times) at ~30 ns a read, all within microseconds of each other in
 * one read: closer than any timeout or metric here can tell apart. Two readings in one
 * read are equal, so never time work within one with it.
 */
export function eventNow(): number {
  return eventDepth > 0 ? eventAt : performance.now();
}

let eventDepth = 0;
let eventAt = 0;

/** Hands a socket read to its reader as one event: eventNow() within it is read once. */
export function readEvent(reader: { onData(chunk: Buffer): void }, chunk: Buffer): void {
  if (eventDepth++ === 0) eventAt = performance.now();
  try {
    reader.onData(chunk);
  } finally {
    eventDepth--;
  }
}

export const systemClock: Clock = { now: eventNow };

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
