/**
 * The service's HTTP/2 and gRPC calls (h2c with prior knowledge on the outbound
 * listener), stream by stream: resolve :authority to a service as the HTTP/1.1 path
 * resolves Host, apply its HTTPRoute, take a breaker slot, pick a healthy endpoint, and
 * relay the stream over that endpoint's HTTP/2 session, mTLS with the peer's SPIFFE ID
 * checked (stream-relay.ts). Each call is counted, logged and traced like an HTTP/1.1 one.
 */
import type { IncomingHttpHeaders } from "node:http2";
import { resolveHost, type Destination, type Snapshot } from "../destinations.ts";
import { routedDestination } from "../routing.ts";
import { CLIENT_CLOSED_STATUS, errorParts, type ErrorParts } from "../errors.ts";
import type { InflightTracker } from "../inflight.ts";
import { UNKNOWN_DESTINATION, type ProxyMetrics } from "../metrics.ts";
import type { AccessLog } from "../access-log.ts";
import type { Tracer } from "../tracing/tracer.ts";
import { traceParentValue } from "../tracing/tracer.ts";
import { pickEndpoint } from "../outbound-call.ts";
import { joinedFieldValue } from "../transport/h1/request-parse.ts";
import { forwardedRequest, isGrpc, streamHead, streamProblem } from "./h2-headers.ts";
import { droppedFor } from "../headers.ts";
import type { IdleStreams } from "./idle-streams.ts";
import { answered, StreamReporter } from "./stream-report.ts";
import { relayStream } from "./stream-relay.ts";
import type { RelayEnd } from "./relay-contract.ts";
import { StreamRetries } from "./stream-retries.ts";
import { editH2Headers } from "../header-edits.ts";
import { injectFault } from "../fault.ts";
import { isRetryableRequest } from "../resilience/retry.ts";
import { grpcTimeoutMs } from "./grpc-deadline.ts";
import { H2Mirror, mirrors } from "../mirror.ts";
import { whileDelayed, type H2ServerStream } from "./wire/server-stream.ts";

export interface OutboundH2Deps {
  snapshot: () => Snapshot;
  metrics: ProxyMetrics;
  tracker: InflightTracker;
  /** Largest body of a plain HTTP/2 request, and largest message of a gRPC call (whose stream may be long). */
  maxBodyBytes: number;
  /** Streams silent for too long are reset. */
  idleStreams: IdleStreams;
  accessLog?: AccessLog;
  tracer?: Tracer;
}

const NOTHING_DROPPED: readonly string[] = [];

export function outboundH2(deps: OutboundH2Deps) {
  const reporter = new StreamReporter(deps, "outbound");
  return (stream: H2ServerStream, headers: IncomingHttpHeaders): void => {
    const head = streamHead(headers);
    const grpc = isGrpc(headers);
    const call = { head, grpc, started: performance.now() };
    const span = deps.tracer?.begin(head.fields);
    deps.tracker.start();
    // peer "": answered before any destination, counted under "unknown".
    const report = (peer: string, end: RelayEnd) => reporter.report(call, end, peer || UNKNOWN_DESTINATION, peer, span);
    const answer = (e: ErrorParts, peer: string) => report(peer, answered(stream, e, grpc));

    const problem = streamProblem(headers);
    if (problem !== undefined) {
      deps.metrics.refused.inc({ direction: "outbound", reason: problem.reason });
      return answer(errorParts("bad-request", problem.detail), "");
    }
    const snapshot = deps.snapshot();
    const named = resolveHost(snapshot, head.host);
    if (!named) return answer(errorParts("no-route", `no service named "${head.host}" in this proxy's config`), "");
    const route = snapshot.routes.size === 0 ? undefined : snapshot.routes.get(named);
    const choice = route === undefined ? undefined : routedDestination(route, { method: head.method, pathAndQuery: head.pathAndQuery, header: (n) => joinedFieldValue(head.fields, n) });
    const dest: Destination = choice === undefined ? named : choice.dest;
    const send = () => {
      const change = choice?.requestHeaders;
      const admitted = dest.breaker.tryAcquire("requests");
      if (admitted !== true) return answer(errorParts("overflow", `${dest.name}: ${admitted.replace(/-/g, " ")} reached`, { "x-mesh-overflow": admitted }), dest.name);
      const pick = { header: (n: string) => joinedFieldValue(head.fields, n) ?? null };
      const endpoint = pickEndpoint(dest, pick, undefined);
      if (!endpoint) {
        dest.breaker.release("requests");
        return answer(errorParts("no-healthy-endpoints", `service ${dest.name} has no endpoint to send to`), dest.name);
      }
      dest.budget.onRequest();
      const out = forwardedRequest(headers, droppedFor(change?.drop ?? NOTHING_DROPPED, span), span === undefined ? {} : { traceparent: traceParentValue(span) });
      if (change !== undefined) editH2Headers(out, change);
      const { timeoutMs, perTryMs, retryPolicy } = choice === undefined ? dest.call : choice.call;
      const tries = new StreamRetries(dest, retryPolicy, endpoint, pick, isRetryableRequest(head.method, { get: pick.header }), deps.metrics);
      const mirror = choice?.mirror !== undefined && mirrors(choice.mirror) ? new H2Mirror(choice.mirror, out, deps.metrics) : undefined;
      const settings = { maxBodyBytes: deps.maxBodyBytes, timeoutMs, perTryMs, responseEdits: choice?.responseHeaders, upstreamIsProxy: dest.spiffeId !== undefined, deadlineMs: grpc ? grpcTimeoutMs(headers["grpc-timeout"]) : undefined, mirror, grpc, takesTrailers: headers.te === "trailers", idle: deps.idleStreams, upstreamName: dest.name };
      relayStream(stream, dest.pools.h2Session(endpoint), out, settings, (end) => {
        tries.end(end, call.started);
        dest.breaker.release("requests");
        report(dest.name, end);
      }, tries);
    };
    if (choice?.fault === undefined) return send();
    const wait = injectFault(choice.fault, send, (e) => answer(e, dest.name));
    if (wait === undefined) return;
    // Held for a delay, the body waits in the stream's window; the relay takes the stream over.
    // A client that leaves meanwhile ends the call, nothing sent.
    stream.pause();
    stream.handle(whileDelayed(() => wait.cancel() && report(dest.name, { status: CLIENT_CLOSED_STATUS, grpcStatus: undefined, failure: undefined, limit: undefined, headAt: 0 })));
  };
}
