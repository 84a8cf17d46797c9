/** What the HTTP/1.1 code drives a connection through: a Bun socket, or a mux stream (./mux). */
export interface ByteSocket {
  /** Bytes taken (all, some, or 0 until the drain event); negative once closed. */
  write(data: string | Uint8Array, byteOffset?: number, byteLength?: number): number;
  pause(): void;
  resume(): void;
  /** Closes gracefully, after what was written. */
  end(): unknown;
  /** Drops the connection (a reset). */
  terminate(): void;
  /** Arms the timeout event, once, this many seconds from now: a read does not re-arm it (Bun 1.4.5; fires on 4-second ticks). */
  timeout(seconds: number): void;
  /** 1 while usable. */
  readonly readyState: number;
  /** The peer's request is being refused for breaking HTTP (a mux stream counts it against its session's churn). */
  refusedPeer?(): void;
  /** Its writes already leave together at the end of the turn (a mux stream): holding them would cost a turn. */
  readonly batchesWrites?: boolean;
}
