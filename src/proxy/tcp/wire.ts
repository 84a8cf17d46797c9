/**
 * mesh-tcp/1: one opaque TCP connection carried over one mutual-TLS connection between two
 * sidecars, chosen by ALPN. The caller's sidecar sends the two-byte port (big-endian) the
 * connection is for, the workload's own port (the Service port's targetPort), then the
 * client's bytes at once; the callee's sidecar answers one byte: CONNECTED, then the
 * service's bytes, or a refusal, then the end. No other framing: after the answer the
 * connection is the service's byte stream, and its TLS close is the stream's end.
 */
export const TCP_ALPN = "mesh-tcp/1";

/** Bytes before the client's: the target port. */
export const PREAMBLE_BYTES = 2;

export function preamble(port: number): Uint8Array {
  return new Uint8Array([port >> 8, port & 0xff]);
}

export function portOf(bytes: Uint8Array): number {
  return (bytes[0]! << 8) | bytes[1]!;
}

/** The callee's one-byte answer. */
export const Answer = {
  connected: 0,
  /** The port is not one of the service's tcp ports: nothing is there to reach. */
  noSuchPort: 1,
  /** An AuthorizationPolicy refused the caller. */
  denied: 2,
  /** The service did not take the connection. */
  upstreamFailed: 3,
  /** The sidecar cannot decide yet (no config from its control plane). */
  notReady: 4,
  /** The service's RateLimitPolicy refused the connection (each counts as a request). */
  rateLimited: 5,
} as const;
export type Answer = (typeof Answer)[keyof typeof Answer];

/** Why a connection was refused, as metrics, logs and the caller's side name it. */
export const ANSWER_RESULT: Record<Answer, string> = {
  0: "ok",
  1: "no-such-port",
  2: "denied",
  3: "upstream-failed",
  4: "not-ready",
  5: "rate-limited",
};
