/**
 * What the HTTP/1.1 client needs of a cancellation signal. An AbortSignal fits; so does
 * the proxy's per-request Deadline, which implements it without an AbortController and
 * event dispatch on every request.
 */
export interface AbortLike {
  readonly aborted: boolean;
  readonly reason: unknown;
  addEventListener(type: "abort", listener: () => void, options?: { once?: boolean }): void;
  removeEventListener(type: "abort", listener: () => void): void;
}
