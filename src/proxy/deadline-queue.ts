/**
 * All deadlines of one length, in one list with one timer. Deadlines of equal length
 * expire in the order they were made, so appending keeps the list sorted by due time:
 * adding and removing are O(1) link updates, and the timer only ever waits for the head.
 * A timer per request (setTimeout + clearTimeout) cost about 5% of the proxy's CPU per
 * request; this costs a timer event about once per timeout period under steady traffic.
 *
 * The timer is unref'd: in-flight requests keep the process alive through their
 * sockets, and an idle queue must not hold up exit after a drain.
 */
import { eventNow } from "../core/clock.ts";

export interface QueuedDeadline {
  due: number;
  prev: QueuedDeadline | undefined;
  next: QueuedDeadline | undefined;
  expire(): void;
}

export class DeadlineQueue {
  private head: QueuedDeadline | undefined;
  private tail: QueuedDeadline | undefined;
  private timer: Timer | undefined;
  /** When the armed timer fires (the clock's time base: performance.now()). */
  private firesAt = 0;

  constructor(
    readonly ms: number,
    private readonly now: () => number = eventNow,
  ) {}

  get empty(): boolean {
    return this.head === undefined;
  }

  add(d: QueuedDeadline): void {
    d.due = this.now() + this.ms;
    d.next = undefined;
    d.prev = this.tail;
    if (this.tail) this.tail.next = d;
    else this.head = d;
    this.tail = d;
    // An armed timer fires no later than this one's due time: it was armed for an older head.
    if (this.timer === undefined) this.arm(this.ms);
  }

  remove(d: QueuedDeadline): void {
    if (d.prev) d.prev.next = d.next;
    else if (this.head === d) this.head = d.next;
    else return; // not queued (already expired or removed)
    if (d.next) d.next.prev = d.prev;
    else this.tail = d.prev;
    d.prev = d.next = undefined;
    // The timer stays armed: when it fires early for the new head, it re-arms once.
  }

  private arm(delay: number): void {
    this.firesAt = this.now() + delay;
    this.timer = setTimeout(() => this.fire(), Math.max(1, Math.ceil(delay)));
    this.timer.unref();
  }

  private fire(): void {
    this.timer = undefined;
    const now = Math.max(this.now(), this.firesAt);
    // Expire in order; a listener may add or clear deadlines, which the links absorb.
    for (let d = this.head; d !== undefined && d.due <= now; d = this.head) {
      this.remove(d);
      d.expire();
    }
    if (this.head !== undefined && this.timer === undefined) this.arm(this.head.due - this.now());
  }
}

const queues = new Map<number, DeadlineQueue>();

/** The process-wide queue for deadlines of `ms` (a destination's request timeout: few distinct values). */
export function queueFor(ms: number): DeadlineQueue {
  let q = queues.get(ms);
  if (q === undefined) queues.set(ms, (q = new DeadlineQueue(ms)));
  return q;
}
