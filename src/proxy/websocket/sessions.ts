/**
 * The relays open on a listener, so a drain can tell their clients to go elsewhere
 * (1001 Going Away) instead of waiting out the drain timeout on connections that may
 * never end by themselves.
 */
import type { Relay } from "./relay.ts";

export class WebSocketSessions {
  private open = new Set<Relay>();
  private goneAway?: string;

  /** After goingAway(), a late upgrade (its handshake was already in flight) is closed at once. */
  add(relay: Relay): void {
    if (this.goneAway !== undefined) relay.fail(1001, this.goneAway);
    else this.open.add(relay);
  }

  delete(relay: Relay): void {
    this.open.delete(relay);
  }

  get size(): number {
    return this.open.size;
  }

  /** Closes every relay on both sides with 1001; each removes itself as it ends. */
  goingAway(reason = "mesh: proxy draining"): void {
    this.goneAway = reason;
    for (const relay of [...this.open]) relay.fail(1001, reason);
  }
}
