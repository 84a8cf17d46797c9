/**
 * Bun's client WebSocket under its own type. With the DOM lib loaded, the global is
 * typed as the browser's, which hides the options object (headers, tls) and the
 * pause/resume/terminate this relay needs.
 */
import type { WebSocket as BunWebSocket, WebSocketOptions } from "bun";

export type ClientWebSocket = BunWebSocket;

export const ClientWebSocket = WebSocket as unknown as new (url: string, options?: WebSocketOptions) => BunWebSocket;

export const OPEN = 1;
export const CLOSING = 2;
export const CLOSED = 3;
