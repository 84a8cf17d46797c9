/**
 * The loopback servers behind the listeners' WebSocket tunnels carry upgrades only: an
 * answer other than 101 ends the tunnel, so no plain request ever rides one.
 */

/**
 * Longer than an upgrade may wait for its upstream's 101: Bun.serve closes a connection
 * whose answer takes longer than its idle timeout (default 10 s). Bun's types leave the
 * option off Unix-socket servers, but 1.4.5 honours it there (measured: a handler that
 * answered after 12 s was cut at 10 s without it, and answered with it).
 */
export const UPGRADE_IDLE_TIMEOUT = { idleTimeout: 30 } as object;

export function closing(res: Response): Response {
  res.headers.set("connection", "close");
  return res;
}
