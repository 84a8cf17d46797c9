/**
 * What a listener connection's idle timer decides when it fires. Bun arms a socket's timer
 * once and does not re-arm it on a read (1.4.5), and a mux session fires it for its
 * streams on the same schedule, so each firing looks back over one period:
 * - a connection closes after one to two periods without use (a byte read, a write
 *   drained, a response finished), never in the middle of a keep-alive conversation;
 * - a client that took nothing of what is written to it for a whole period is dropped
 *   (nginx's send_timeout), mid-response too;
 * - a request head still incomplete at two firings in a row (one to two periods after
 *   it began) is refused, however many bytes trickled in.
 * Requests waiting on the service have their own deadlines.
 */
export type IdleVerdict = "keep" | "close" | "reset" | "head-timeout";

export interface ConnectionState {
  /** A request in flight, or a tunnel. */
  busy: boolean;
  /** Bytes wait for the client to take them. */
  blocked: boolean;
  /** Part of a request head has arrived. */
  partialHead: boolean;
}

export class IdleWatch {
  /** Used since the last firing: a byte read, a write drained, a response finished. */
  stirred = false;
  /** Request heads parsed so far. */
  heads = 0;
  private drained = false;
  private blockedAtFiring = false;
  /** `heads` when a firing found a head incomplete. */
  private headsAtStall = -1;

  /** The client took some of what was waiting for it. */
  onDrain(): void {
    this.stirred = true;
    this.drained = true;
  }

  fire(state: ConnectionState): IdleVerdict {
    const { stirred, drained } = this;
    const blockedBefore = this.blockedAtFiring;
    this.stirred = false;
    this.drained = false;
    this.blockedAtFiring = state.blocked;
    if (state.blocked && blockedBefore && !drained) return "reset";
    if (state.busy || state.blocked) return "keep";
    if (state.partialHead) {
      if (this.headsAtStall === this.heads) return "head-timeout";
      this.headsAtStall = this.heads;
      return "keep";
    }
    return stirred ? "keep" : "close";
  }
}
