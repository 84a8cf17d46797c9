/**
 * The tries of one outbound HTTP/2 stream, on the HTTP/1.1 call's rules (outbound-call.ts):
 * - a try that never reached the service (no connection, the wrong peer, a stream refused
 *   unprocessed or not taken by a session ending) goes again whatever the method;
 * - a reset before the response head, or a response status in `retries.statusCodes`, only
 *   for an idempotent request (its method, or an Idempotency-Key);
 * - a gRPC call answered trailers-only with a status in `retries.grpcStatuses`, whatever
 *   the call: the policy listing that status says the service's calls are safe to repeat
 *   on it (Envoy's `retry_on` gRPC codes and Linkerd's GRPCRoute retries work the same way).
 * The relay (stream-relay.ts) asks only while it still holds the whole request body sent.
 * Each retry goes to an endpoint not tried yet where there is one, after full-jitter
 * backoff, within the attempts, the retry budget and the breaker's retries; each try's
 * result counts for its endpoint's outlier detection.
 */
import type { Destination } from "../destinations.ts";
import type { Endpoint, PickContext } from "../endpoint.ts";
import type { ProxyMetrics } from "../metrics.ts";
import { pickEndpoint } from "../outbound-call.ts";
import { recordLatency } from "../balancer/index.ts";
import { systemClock } from "../../core/clock.ts";
import { backoffMs, shouldRetry, type AttemptOutcome, type RetryPolicy } from "../resilience/retry.ts";
import { RetryAllowance } from "../resilience/retry-allowance.ts";
import { CLIENT_CLOSED_STATUS } from "../errors.ts";
import { grpcServerFailed } from "./grpc-outcome.ts";
import type { NextTry, RelayEnd, TryFailure, TryRetries } from "./relay-contract.ts";

export class StreamRetries implements TryRetries {
  private tries = 0;
  /** The current try's result counts against its endpoint already. */
  private counted = false;
  /** Made at the first retry. */
  private allowance: RetryAllowance | undefined;
  /** Every endpoint tried so far, from the first retry on. */
  private tried: Endpoint[] | undefined;

  constructor(
    private readonly dest: Destination,
    /** The destination's, or its route rule's. */
    private readonly policy: RetryPolicy,
    /** The endpoint of the try in flight, or of the last one. */
    private current: Endpoint,
    private readonly ctx: PickContext,
    /** The request may be sent twice without harm (retry.ts: isRetryableRequest). */
    private readonly idempotent: boolean,
    private readonly metrics: ProxyMetrics,
  ) {
    current.inflight++;
  }

  afterFailure(failure: TryFailure, replayable: boolean): NextTry | undefined {
    const dest = this.dest;
    // A stream refused (REFUSED_STREAM) counts against its endpoint, as a 503 would (Envoy counts upstream resets so too):
    // one that refuses every stream is ejected. One not taken by a session ending (GOAWAY) does not: that is a peer draining.
    if (failure !== "not-taken") dest.outlier.onResult(this.current, false);
    this.counted = true;
    const kind: AttemptOutcome["kind"] = failure === "connect-failure" ? "connect-failure" : failure === "reset" ? "reset-before-response" : "refused";
    if (!replayable || !shouldRetry(this.policy, this.tries, { kind }, this.idempotent)) return undefined;
    return this.another();
  }

  afterResponse(status: number, trailersOnlyGrpcStatus: string | undefined): NextTry | undefined {
    const policy = this.policy;
    const again =
      trailersOnlyGrpcStatus !== undefined
        ? shouldRetry(policy, this.tries, { kind: "grpc-status", grpcStatus: trailersOnlyGrpcStatus })
        : status >= 500 && shouldRetry(policy, this.tries, { kind: "status", status }, this.idempotent);
    if (!again) return undefined;
    this.dest.outlier.onResult(this.current, status < 500 && !grpcServerFailed(trailersOnlyGrpcStatus));
    this.counted = true;
    return this.another();
  }

  /** The stream is over (`started`: performance.now() at its start): the last try's result; the retry slot freed. */
  end(end: RelayEnd, started: number): void {
    const dest = this.dest;
    this.current.inflight--;
    this.allowance?.release(dest);
    // As for HTTP/1.1: 5xx, a gRPC status that says the server failed, and failures to reach it count against the endpoint; a client that left does not.
    if (end.status !== CLIENT_CLOSED_STATUS && !this.counted) dest.outlier.onResult(this.current, end.status < 500 && !grpcServerFailed(end.grpcStatus));
    if (dest.ewmaDecayMs !== undefined && end.headAt !== 0) recordLatency(this.current, end.headAt - started, systemClock, dest.ewmaDecayMs);
  }

  /** The next try, if an endpoint and the limits allow one. */
  private another(): NextTry | undefined {
    const dest = this.dest;
    (this.tried ??= []).push(this.current);
    const next = pickEndpoint(dest, this.ctx, this.tried);
    if (next === undefined || !(this.allowance ??= new RetryAllowance()).take(dest)) return undefined;
    this.current.inflight--;
    next.inflight++;
    this.current = next;
    this.counted = false;
    this.metrics.retries.inc({ peer: dest.name });
    return { waitMs: backoffMs(this.policy, this.tries++, Math.random), session: () => dest.pools.h2Session(next) };
  }
}
