/**
 * What a relayed HTTP/2 stream is told and tells back (stream-relay.ts): its options, how
 * it ended, and the questions it asks its retry policy (stream-retries.ts) after each try.
 */
import type { ProxyFailure } from "../errors.ts";
import type { HeaderEdits } from "../header-edits.ts";
import type { H2Mirror } from "../mirror.ts";
import type { IdleStreams } from "./idle-streams.ts";
import type { H2ClientSession } from "./wire/client-session.ts";

export interface RelayEnd {
  /** The upstream's status; the proxy's own answer's; or 499 when the client left first. */
  status: number;
  /** From the response's trailers, or its trailers-only head. */
  grpcStatus: string | undefined;
  /** Set when the proxy answered or reset the stream itself. */
  failure: ProxyFailure | undefined;
  /** The limit an overflow the proxy answered reached (x-mesh-overflow). */
  limit: string | undefined;
  /** performance.now() when the response head arrived; 0 without one. */
  headAt: number;
}

export interface RelayOptions {
  /** Longest from sending until the response head, over every try; 0: none. */
  timeoutMs: number;
  /** Longest one try may wait for its response head before it is given up (and may be retried); 0: none. */
  perTryMs: number;
  /** Failures are answered with a gRPC status. */
  grpc: boolean;
  /**
   * Largest request body sent on, in bytes, or for a gRPC call largest message; beyond it
   * the call is refused (413, RESOURCE_EXHAUSTED) or, once answered, reset. 0: none.
   */
  maxBodyBytes: number;
  /** The client sent `te: trailers`: the response's trailers are relayed to it. */
  takesTrailers: boolean;
  /** Where the stream is watched for silence (idle-streams.ts). */
  idle: IdleStreams;
  /** What each failure's answer says, after the cause. */
  upstreamName: string;
  /** The upstream is a sidecar: its own answers (x-mesh-error) go on unedited; any other's answer headers are left off. */
  upstreamIsProxy: boolean;
  /** A route's changes to the response's headers (not its trailers). */
  responseEdits?: HeaderEdits;
  /** A gRPC call's deadline (its grpc-timeout), over every try and the whole response: DEADLINE_EXCEEDED, or a reset, past it. */
  deadlineMs?: number;
  /** A route's copy of the call (mirror.ts): fed the body as it is sent on. */
  mirror?: H2Mirror;
}

/** Why a try never reached the service. */
export type NeverSent = "connect-failure" | "peer-identity" | "refused-stream" | "not-taken";
/** How a try failed before its response head: it never reached the service, or it was reset and may have. */
export type TryFailure = NeverSent | "reset";

/** The next try: sent after `waitMs`, on the session asked for then. */
export interface NextTry {
  waitMs: number;
  session(): H2ClientSession;
}

/** Whether a try is followed by another (called once per try that ends so). */
export interface TryRetries {
  /** The try failed before its head; `replayable` is false when its body was too long to keep. */
  afterFailure(failure: TryFailure, replayable: boolean): NextTry | undefined;
  /** The try was answered, and its body is kept whole; `trailersOnlyGrpcStatus` is set for a gRPC call answered by its head alone. */
  afterResponse(status: number, trailersOnlyGrpcStatus: string | undefined): NextTry | undefined;
}
