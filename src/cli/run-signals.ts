/**
 * `mesh run`'s SIGTERM and SIGINT handlers: one pair, installed once the sidecar is up
 * and kept for the process's life, each signal handed to whatever step mesh run is in.
 * Never removed and installed again per step: a signal arriving in between would find no
 * handler and take its default action, ending mesh run with no drain and its service
 * left running.
 */
export type Forwarded = "SIGTERM" | "SIGINT";

export const SIGNAL_NUMBERS: Record<Forwarded, number> = { SIGINT: 2, SIGTERM: 15 };

export class RunSignals {
  private handler: ((signal: Forwarded) => void) | undefined;
  /** Signals that came while no step took them (hold()), for the next one. */
  private readonly held: Forwarded[] = [];

  constructor() {
    for (const signal of ["SIGTERM", "SIGINT"] as const)
      process.on(signal, () => (this.handler ? this.handler(signal) : this.held.push(signal)));
  }

  /** Every signal from now on goes to `handler`: first those held meanwhile. */
  handle(handler: (signal: Forwarded) => void): void {
    this.handler = handler;
    for (const signal of this.held.splice(0)) handler(signal);
  }

  /** Signals wait for the next handle(): for a step between two that take them. */
  hold(): void {
    this.handler = undefined;
  }
}
