/**
 * One outbound request to a destination, with the resilience that belongs to it:
 * endpoints ejected by outlier detection are skipped, and a try that failed before the
 * upstream saw the request (connect failure, refused, wrong peer identity) or an
 * idempotent bodiless request that failed with a configured status is retried on
 * another endpoint, with jittered backoff, within the destination's retry budget.
 * A request with a body is never retried: its stream may already be partly consumed.
 */
import type { Destination } from "./destinations.ts";
import type { Endpoint, PickContext } from "./endpoint.ts";
import { classifyFetchError, errorResponse, type ProxyFailure } from "./errors.ts";
import type { ProxyMetrics } from "./metrics.ts";
import { backoffMs, isRetryableRequest, shouldRetry, type AttemptOutcome } from "./resilience/retry.ts";
import { relayResponse } from "./transport/http-client.ts";

export interface OutboundAttempt {
  method: string;
  pathAndQuery: string;
  headers: Headers;
  body: ReadableStream<Uint8Array> | null;
}

const OUTCOME: Record<ProxyFailure, AttemptOutcome["kind"]> = {
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

export async function callDestination(dest: Destination, req: OutboundAttempt, ctx: PickContext, metrics: ProxyMetrics): Promise<Response> {
  const replayable = req.body === null && isRetryableRequest(req.method, req.headers);
  dest.budget.onRequest();
  let tried: Endpoint | undefined;
  for (let attempt = 0; ; attempt++) {
    const endpoint = pickEndpoint(dest, ctx, tried);
    if (!endpoint) return errorResponse("no-healthy-endpoints", `service ${dest.name} has no endpoint to send to`);
    tried = endpoint;
    endpoint.inflight++;
    try {
      const res = await dest.send({
        method: req.method,
        url: `https://${endpoint.key}${req.pathAndQuery}`,
        headers: req.headers,
        body: req.body,
      });
      dest.outlier.onResult(endpoint, res.status < 500);
      const outcome: AttemptOutcome = { kind: "status", status: res.status };
      if (!replayable || !shouldRetry(dest.retryPolicy, attempt, outcome) || !dest.budget.tryWithdraw()) return relayResponse(res);
      await res.body?.cancel();
    } catch (err) {
      dest.outlier.onResult(endpoint, false);
      const kind = classifyFetchError(err);
      const failure = errorResponse(kind, `${dest.name} endpoint ${endpoint.key}: ${(err as Error).message}`);
      const outcome = { kind: OUTCOME[kind] } as AttemptOutcome;
      // Connect failures are safe to retry even for a POST (shouldRetry knows), but only
      // without a body: fetch may have started reading the stream.
      if (req.body !== null || !shouldRetry(dest.retryPolicy, attempt, outcome, replayable) || !dest.budget.tryWithdraw()) return failure;
    } finally {
      endpoint.inflight--;
    }
    metrics.retries.inc({ peer: dest.name });
    await Bun.sleep(backoffMs(dest.retryPolicy, attempt, Math.random));
  }
}
