/**
 * The request timeout: one deadline for all tries of a request, up to the response
 * headers. It is cleared once headers arrive, because aborting after that would cut a
 * body that is legitimately still streaming. A zero timeout means none.
 */
export class Deadline {
  private readonly controller: AbortController | undefined;
  private readonly timer: Timer | undefined;
  expired = false;

  constructor(ms: number) {
    if (ms <= 0) return;
    const controller = new AbortController();
    this.controller = controller;
    this.timer = setTimeout(() => {
      this.expired = true;
      controller.abort(new DOMException(`no response within ${ms} ms`, "TimeoutError"));
    }, ms);
  }

  get signal(): AbortSignal | undefined {
    return this.controller?.signal;
  }

  clear(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
  }
}
