/**
 * One outbound request to a destination, with the resilience that belongs to it:
 * endpoints ejected by outlier detection are skipped, and a try that failed before the
 * upstream saw the request (connect failure, refused, wrong peer identity) or an
 * idempotent bodiless request that failed with a configured status is retried on
 * another endpoint, with jittered backoff, within the destination's retry budget.
 * A request with a body is retried only if it never left: once sent, its stream is spent.
 * The destination's circuit breaker caps requests and retries in flight (503 with
 * `x-mesh-overflow` naming the limit), and one deadline bounds all tries of a request.
 */
import type { Destination } from "./destinations.ts";
import type { Endpoint, PickContext } from "./endpoint.ts";
import { errorParts, type ErrorParts, type ProxyFailure } from "./errors.ts";
import type { ProxyMetrics } from "./metrics.ts";
import { backoffMs, shouldRetry, type AttemptOutcome } from "./resilience/retry.ts";
import { proxyFailureOf, requestMayHaveBeenSent } from "./transport/h1/index.ts";
import { Attempt } from "./transport/h1/attempt.ts";
import type { RequestBody } from "./transport/h1/request-body.ts";
import type { PreparedRequest } from "./transport/h1/request-head.ts";
import { recordLatency } from "./balancer/index.ts";
import { systemClock } from "../core/clock.ts";
import { Deadline } from "./deadline.ts";
import type { OverflowReason } from "./resilience/circuit-breaker.ts";

export interface OutboundRequest {
  prepared: PreparedRequest;
  body: RequestBody | null;
}

/** The response kept (attach it to where it goes), or the proxy's own answer. */
export type CallResult = { ok: true; attempt: Attempt; status: number } | { ok: false; error: ErrorParts };

type FailureOutcome = Exclude<AttemptOutcome["kind"], "status" | "response-started">;

const OUTCOME: Record<ProxyFailure, FailureOutcome> = {
  "connect-failure": "connect-failure",
  "peer-identity": "refused", // the request never left this proxy
  "upstream-reset": "reset-before-response",
  timeout: "timeout-before-response",
  "no-route": "refused",
  "no-healthy-endpoints": "refused",
  overflow: "refused",
  "bad-request": "refused",
};

/** Prefers an endpoint not tried yet; falls back to any healthy one. */
function pickEndpoint(dest: Destination, ctx: PickContext, tried: Endpoint | undefined): Endpoint | undefined {
  const healthy = dest.outlier.healthy(dest.endpoints);
  if (tried && healthy.length > 1) {
    const others = healthy.filter((e) => e !== tried);
    return dest.balancer.pick(others, ctx);
  }
  return dest.balancer.pick(healthy, ctx);
}

export async function callDestination(dest: Destination, req: OutboundRequest, ctx: PickContext, metrics: ProxyMetrics): Promise<CallResult> {
  const admitted = dest.breaker.tryAcquire("requests");
  if (admitted !== true) return overflow(dest, admitted);
  // Requests queue in the pools once every endpoint is at maxConnections; past this many, refuse.
  if (dest.pools.waiting() >= dest.policy.circuitBreaker.maxPendingRequests) {
    dest.breaker.release("requests");
    return overflow(dest, "max-pending-requests");
  }
  const deadline = new Deadline(dest.requestTimeoutMs);
  try {
    return await tryEndpoints(dest, req, ctx, metrics, deadline);
  } finally {
    deadline.clear();
    dest.breaker.release("requests");
  }
}

async function tryEndpoints(dest: Destination, req: OutboundRequest, ctx: PickContext, metrics: ProxyMetrics, deadline: Deadline): Promise<CallResult> {
  const replayable = req.prepared.replayable;
  dest.budget.onRequest();
  let tried: Endpoint | undefined;
  // A retry holds one of the destination's retry slots from the decision to its end.
  let holdingRetry = false;
  try {
    for (let attempt = 0; ; attempt++) {
      const endpoint = pickEndpoint(dest, ctx, tried);
      if (!endpoint) return failed("no-healthy-endpoints", `service ${dest.name} has no endpoint to send to`);
      tried = endpoint;
      endpoint.inflight++;
      const sentAt = performance.now();
      try {
        const pending = new Attempt();
        dest.pools.dispatch(endpoint, req.prepared, req.body, pending, deadline.signal);
        const { status } = await pending.head$;
        if (dest.ewmaDecayMs !== undefined) recordLatency(endpoint, performance.now() - sentAt, systemClock, dest.ewmaDecayMs);
        dest.outlier.onResult(endpoint, status < 500);
        const outcome: AttemptOutcome = { kind: "status", status };
        if (!replayable || !shouldRetry(dest.retryPolicy, attempt, outcome)) return { ok: true, attempt: pending, status };
        if (!(holdingRetry = takeRetry(dest, deadline, holdingRetry))) return { ok: true, attempt: pending, status };
        pending.discard();
      } catch (err) {
        dest.outlier.onResult(endpoint, false);
        const kind = deadline.expired ? "timeout" : proxyFailureOf(err);
        if (kind === "peer-identity") metrics.tlsFailures.inc({ direction: "outbound", reason: "peer-identity" });
        const detail = deadline.expired ? `no response within ${dest.requestTimeoutMs} ms` : (err as Error).message;
        const failure = failed(kind, `${dest.name} endpoint ${endpoint.key}: ${detail}`);
        // A request that never left (connect failure, refused peer) is safe to send again,
        // whatever its method, and its body was never read; anything else only if replayable.
        const sent = requestMayHaveBeenSent(err);
        const outcome: FailureOutcome = sent ? OUTCOME[kind] : kind === "peer-identity" ? "refused" : "connect-failure";
        if ((req.body !== null && sent) || !shouldRetry(dest.retryPolicy, attempt, { kind: outcome }, replayable)) return failure;
        if (!(holdingRetry = takeRetry(dest, deadline, holdingRetry))) return failure;
      } finally {
        endpoint.inflight--;
      }
      metrics.retries.inc({ peer: dest.name });
      await Bun.sleep(backoffMs(dest.retryPolicy, attempt, Math.random));
    }
  } finally {
    if (holdingRetry) dest.breaker.release("retries");
  }
}

/**
 * Whether one more try may go out: time left, and budget. A request keeps the retry
 * slot it already holds; otherwise it needs a free one. Returns whether it holds one.
 */
function takeRetry(dest: Destination, deadline: Deadline, holding: boolean): boolean {
  const held = holding || dest.breaker.tryAcquire("retries") === true;
  if (held && !deadline.expired && dest.budget.tryWithdraw()) return true;
  if (held) dest.breaker.release("retries");
  return false;
}

function failed(kind: ProxyFailure, detail: string, extra?: Record<string, string>): CallResult {
  return { ok: false, error: errorParts(kind, detail, extra) };
}

function overflow(dest: Destination, reason: OverflowReason): CallResult {
  return failed("overflow", `${dest.name}: ${reason.replace(/-/g, " ")} reached`, { "x-mesh-overflow": reason });
}
