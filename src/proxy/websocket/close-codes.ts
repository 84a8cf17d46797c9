/**
 * Close codes crossing the relay. Each side's API accepts a different set, and the
 * codes that only describe what happened locally (1005 "no code", 1006 "abnormal")
 * must be re-enacted rather than sent, so the far end observes the same thing.
 */
import type { ServerWebSocket } from "bun";
import { CLOSED, CLOSING, type ClientWebSocket } from "./client.ts";

/** Codes an endpoint may put in a Close frame (RFC 6455 §7.4); the client API throws on others. */
export function isSendable(code: number): boolean {
  return (code >= 1000 && code <= 1014 && code !== 1004 && code !== 1005 && code !== 1006) || (code >= 3000 && code <= 4999);
}

/** Closes the client-facing side as the other side closed. */
export function closeServerSide(ws: ServerWebSocket<any>, code: number, reason: string): void {
  if (ws.readyState === 3) return;
  // Bun's close(1005) sends a frame without a code; close() alone would send 1000.
  if (code === 1005) ws.close(1005);
  else if (isSendable(code)) ws.close(code, reason);
  // Abnormal (1006) or unsendable (1015…): end without a Close frame, as it happened
  // upstream. terminate() still flushes the messages already queued.
  else ws.terminate();
}

/** Closes an upstream client WebSocket as the downstream closed. */
export function closeClientSide(ws: ClientWebSocket, code: number, reason: string): void {
  if (ws.readyState === CLOSING || ws.readyState === CLOSED) return;
  if (code === 1005) ws.close();
  else if (isSendable(code)) ws.close(code, reason);
  else ws.terminate();
}
