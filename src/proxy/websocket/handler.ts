/**
 * The `websocket:` option for Bun.serve on either listener: every event is handed to
 * the socket's Relay. Idle timeout and pings stay Bun's: each hop keeps its own link
 * alive (and, while paused for backpressure, Bun suspends the idle timer).
 */
import type { WebSocketHandler } from "bun";
import type { Relay } from "./relay.ts";

export interface HandlerLimits {
  /** Largest message accepted from a client; Bun closes with 1009 beyond it. */
  maxPayloadLength: number;
  /** Bun's per-socket send buffer; the relay pauses its source long before this. */
  backpressureLimit: number;
}

export const DEFAULT_HANDLER_LIMITS: Readonly<HandlerLimits> = Object.freeze({
  maxPayloadLength: 16 << 20,
  backpressureLimit: 16 << 20,
});

export function relayHandler(limits: HandlerLimits = DEFAULT_HANDLER_LIMITS): WebSocketHandler<Relay> {
  return {
    maxPayloadLength: limits.maxPayloadLength,
    backpressureLimit: limits.backpressureLimit,
    open: (ws) => ws.data.attach(ws),
    message: (ws, message) => ws.data.fromDownstream(message),
    drain: (ws) => ws.data.downstreamDrained(),
    close: (ws, code, reason) => ws.data.downstreamClosed(code, reason),
  };
}
