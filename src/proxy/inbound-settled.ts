/**
 * When a drain may judge the inbound side done, and close the outbound listener: the
 * service may call out for as long as it serves an inbound request. Done is when no
 * request is in flight AND no mux session is in its GOAWAY grace, during which a caller
 * that had not heard GOAWAY yet may still open a stream — one that is served, calling out.
 */
import { settlesWithin } from "../core/settles-within.ts";
import type { InflightTracker } from "./inflight.ts";

export interface GracefulListener {
  readonly inGrace: boolean;
  gracesEnded(): Promise<void>;
}

/**
 * Resolves once the inbound side is done, or at `deadline` (epoch ms): false if a request
 * was still in flight then. A grace still running at the deadline cut nothing, so it alone
 * does not make the drain unclean.
 */
export async function inboundSettled(listener: GracefulListener, inflight: InflightTracker, deadline: number): Promise<boolean> {
  for (;;) {
    await settlesWithin(listener.gracesEnded(), deadline - Date.now());
    if (!(await inflight.settle(Math.max(0, deadline - Date.now())))) return false;
    // A session whose handshake ended after the listener stopped accepting is retired then, with a grace of its own.
    if (!listener.inGrace || Date.now() >= deadline) return true;
  }
}
