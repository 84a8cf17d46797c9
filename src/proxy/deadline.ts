/**
 * The request timeout: one deadline for all tries of a request, up to the response
 * headers. It is cleared once headers arrive, because aborting after that would cut a
 * body that is legitimately still streaming. A zero timeout means none.
 *
 * It is its own abort signal (AbortLike): a listener list per request, not an
 * AbortController with event dispatch, on the hot path of every outbound call. And it
 * arms no timer of its own: every deadline of the same length joins one DeadlineQueue
 * (deadline-queue.ts), whose single timer serves them all.
 */
import type { AbortLike } from "./transport/h1/abort.ts";
import { queueFor, type DeadlineQueue } from "./deadline-queue.ts";

export class Deadline implements AbortLike {
  expired = false;
  aborted = false;
  reason: unknown = undefined;
  /** When it expires (performance.now()); links in its queue, maintained by the queue. */
  due = 0;
  prev: Deadline | undefined = undefined;
  next: Deadline | undefined = undefined;
  private readonly queue: DeadlineQueue | undefined;
  private listeners: (() => void)[] | undefined;

  constructor(readonly ms: number) {
    if (ms <= 0) return;
    this.queue = queueFor(ms);
    this.queue.add(this);
  }

  /** Undefined without a timeout: nothing to listen to. */
  get signal(): AbortLike | undefined {
    return this.queue === undefined ? undefined : this;
  }

  addEventListener(_type: "abort", listener: () => void): void {
    (this.listeners ??= []).push(listener);
  }

  removeEventListener(_type: "abort", listener: () => void): void {
    const i = this.listeners?.indexOf(listener) ?? -1;
    if (i >= 0) this.listeners!.splice(i, 1);
  }

  clear(): void {
    if (!this.expired) this.queue?.remove(this);
    this.listeners = undefined;
  }

  /** Called by the queue once `due` has passed. */
  expire(): void {
    this.expired = this.aborted = true;
    this.reason = new DOMException(`no response within ${this.ms} ms`, "TimeoutError");
    const listeners = this.listeners;
    this.listeners = undefined;
    if (listeners) for (const listener of listeners) listener();
  }
}
