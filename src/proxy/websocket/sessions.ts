/**
 * The relays open on a listener, so a drain can tell their clients to go elsewhere
 * (1001 Going Away) instead of waiting out the drain timeout on connections that may
 * never end by themselves; and so can a caller's certificate that is about to end, by
 * the name of the tunnel its WebSocket came through.
 */
import type { Relay } from "./relay.ts";

export class WebSocketSessions {
  private open = new Set<Relay>();
  /** Inbound relays by the tunnel they came through (../transport/h1-server/loopback-tunnel.ts). */
  private readonly byTunnel = new Map<string, Relay>();
  private readonly tunnelOf = new Map<Relay, string>();
  private goneAway?: string;

  /** After goingAway(), a late upgrade (its handshake was already in flight) is closed at once. */
  add(relay: Relay, tunnel?: string): void {
    if (this.goneAway !== undefined) return relay.fail(1001, this.goneAway);
    this.open.add(relay);
    if (tunnel === undefined) return;
    this.byTunnel.set(tunnel, relay);
    this.tunnelOf.set(relay, tunnel);
  }

  delete(relay: Relay): void {
    this.open.delete(relay);
    const tunnel = this.tunnelOf.get(relay);
    if (tunnel === undefined) return;
    this.tunnelOf.delete(relay);
    this.byTunnel.delete(tunnel);
  }

  /** Closes the relay of one tunnel on both sides with 1001: the certificate that proved its caller is about to end. */
  retire(tunnel: string): void {
    this.byTunnel.get(tunnel)?.fail(1001, "mesh: the caller's certificate is ending; connect again");
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
