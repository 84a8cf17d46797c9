/**
 * The request timeout: one deadline for all tries of a request, up to the response
 * headers. It is cleared once headers arrive, because aborting after that would cut a
 * body that is legitimately still streaming. A zero timeout means none.
 *
 * It is its own abort signal (AbortLike): one timer and a listener list per request,
 * not an AbortController with event dispatch, on the hot path of every outbound call.
 */
import type { AbortLike } from "./transport/h1/abort.ts";

export class Deadline implements AbortLike {
  expired = false;
  aborted = false;
  reason: unknown = undefined;
  private readonly timer: Timer | undefined;
  private listeners: (() => void)[] = [];

  constructor(ms: number) {
    if (ms <= 0) return;
    this.timer = setTimeout(() => this.expire(ms), ms);
  }

  /** Undefined without a timeout: nothing to listen to. */
  get signal(): AbortLike | undefined {
    return this.timer === undefined ? undefined : this;
  }

  addEventListener(_type: "abort", listener: () => void): void {
    this.listeners.push(listener);
  }

  removeEventListener(_type: "abort", listener: () => void): void {
    const i = this.listeners.indexOf(listener);
    if (i >= 0) this.listeners.splice(i, 1);
  }

  clear(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.listeners = [];
  }

  private expire(ms: number): void {
    this.expired = this.aborted = true;
    this.reason = new DOMException(`no response within ${ms} ms`, "TimeoutError");
    const listeners = this.listeners;
    this.listeners = [];
    for (const listener of listeners) listener();
  }
}
