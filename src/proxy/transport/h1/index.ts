/**
 * A pooled HTTP/1.1 client on raw Bun sockets, with mTLS and SPIFFE peer checks: one
 * Http1Pool per endpoint (host:port).
 *
 *   const pool = new Http1Pool({
 *     host, port, connectTimeoutMs: 1000, idleTimeoutMs: 4000, // below the upstream's (Bun.serve: 10 s)
 *     tls: { cert, key, ca, verifyPeer: (der) => expectPeer(spiffeId, td)("", { raw: der }) },
 *   });
 *   const res = await pool.send({ method, pathAndQuery, headers, body, signal });
 *
 * Failures are typed (errors.ts): `requestMayHaveBeenSent(err)` says whether a retry
 * could repeat the request, `proxyFailureOf(err)` maps to the proxy's failure kinds.
 */
export { Http1Pool, type PoolOptions, type PoolStats, type PoolRequest } from "./pool.ts";
export type { ConnectionTls } from "./connection.ts";
export type { VerifyPeer } from "./tls-verify.ts";
export {
  AbortedError,
  ConnectError,
  PeerIdentityError,
  ProtocolError,
  RequestBodyError,
  ResetError,
  TimeoutError,
  proxyFailureOf,
  requestMayHaveBeenSent,
  type ConnectFailure,
} from "./errors.ts";
