/**
 * The request timeout: one deadline for all tries of a request, up to the response
 * headers. It is cleared once headers arrive, because aborting after that would cut a
 * body that is legitimately still streaming. A zero timeout means none.
 *
 * It is its own abort signal (AbortLike): a listener list per request, not an
 * AbortController with event dispatch, on the hot path of every outbound call; it also
 * fires when the caller leaves before the response head (cancel()). And it arms no timer
 * of its own: every deadline of the same length joins one DeadlineQueue
 * (deadline-queue.ts), whose single timer serves them all.
 */
import { callAbortListener, type AbortLike, type AbortListener } from "./transport/h1/abort.ts";
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
  /** Almost always one (the exchange in flight): a slot, and a list only beyond it. */
  private listener: AbortListener | undefined;
  private more: AbortListener[] | undefined;

  constructor(readonly ms: number) {
    if (ms <= 0) return;
    this.queue = queueFor(ms);
    this.queue.add(this);
  }


  addEventListener(_type: "abort", listener: AbortListener): void {
    if (this.listener === undefined) this.listener = listener;
    else (this.more ??= []).push(listener);
  }

  removeEventListener(_type: "abort", listener: AbortListener): void {
    if (this.listener === listener) this.listener = this.more?.shift();
    else {
      const i = this.more?.indexOf(listener) ?? -1;
      if (i >= 0) this.more!.splice(i, 1);
    }
  }

  clear(): void {
    if (!this.expired) this.queue?.remove(this);
    this.listener = this.more = undefined;
  }

  /** Called by the queue once `due` has passed. */
  expire(): void {
    this.expired = true;
    this.abort(new DOMException(`no response within ${this.ms} ms`, "TimeoutError"));
  }

  /** The caller went away: what is in flight is aborted now, with an AbortError. */
  cancel(): void {
    if (this.aborted) return;
    if (!this.expired) this.queue?.remove(this);
    this.abort(new DOMException("the caller closed its connection before the response", "AbortError"));
  }

  private abort(reason: DOMException): void {
    this.aborted = true;
    this.reason = reason;
    const first = this.listener;
    const more = this.more;
    this.listener = this.more = undefined;
    if (first !== undefined) callAbortListener(first);
    if (more !== undefined) for (const listener of more) callAbortListener(listener);
  }
}

/**
 * One try's deadline within its call's (DestinationPolicy timeouts.perTry): the try's
 * signal, aborted when it expires or when the call's deadline aborts (it listens to the
 * call as an object, so no closure is made per try).
 */
export class TryDeadline extends Deadline {
  constructor(
    ms: number,
    private readonly call: Deadline,
  ) {
    super(ms);
    call.addEventListener("abort", this);
  }

  /** The call aborted (it expired, or its caller left): so does the try. */
  handleEvent(): void {
    this.cancel();
  }

  /** The try is over: its timer and its place among the call's listeners are given up. */
  end(): void {
    this.call.removeEventListener("abort", this);
    this.clear();
  }
}
