/**
 * The loopback servers behind the listeners' WebSocket tunnels carry upgrades only: an
 * answer other than 101 ends the tunnel, so no plain request ever rides one.
 */
export function closing(res: Response): Response {
  res.headers.set("connection", "close");
  return res;
}
