/**
 * What the HTTP/1.1 client needs of a cancellation signal. An AbortSignal fits; so does
 * the proxy's per-request Deadline, which implements it without an AbortController and
 * event dispatch on every request.
 */
export interface AbortLike {
  readonly aborted: boolean;
  readonly reason: unknown;
  addEventListener(type: "abort", listener: AbortListener, options?: { once?: boolean }): void;
  removeEventListener(type: "abort", listener: AbortListener): void;
}

/** A function, or (as the DOM allows) an object whose handleEvent is called: no closure needed per listener. */
export type AbortListener = (() => void) | { handleEvent(): void };

export function callAbortListener(listener: AbortListener): void {
  if (typeof listener === "function") listener();
  else listener.handleEvent();
}
