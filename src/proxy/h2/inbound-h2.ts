/**
 * HTTP/2 and gRPC calls from other sidecars (ALPN "h2" on the mTLS listener), stream by
 * stream: the caller is the SPIFFE ID its connection's handshake proved, named by the
 * listener (h2-server.ts). Each stream passes the same admission as an HTTP/1.1
 * request (inbound-admission.ts: end-user token, path in normal form, authorization,
 * rate limits), then goes to the service over one h2c session with the caller in
 * x-mesh-client-id, any copy the caller sent removed. Counted, logged and traced as
 * HTTP/1.1 requests are.
 */
import type { IncomingHttpHeaders } from "node:http2";
import { CLIENT_CLOSED_STATUS, errorParts, INTERNAL_ERROR, type ErrorParts } from "../errors.ts";
import { CLIENT_ID_HEADER, droppedFor } from "../headers.ts";
import type { InflightTracker } from "../inflight.ts";
import type { ProxyMetrics } from "../metrics.ts";
import { peerService } from "../peer-service.ts";
import type { AccessLog } from "../access-log.ts";
import type { Tracer } from "../tracing/tracer.ts";
import { traceParentValue } from "../tracing/tracer.ts";
import { admitInbound, authenticateInbound, headersSeen, isRefusal, type InboundPolicies } from "../inbound-admission.ts";
import type { Authenticated } from "../authentication/authenticator.ts";
import { H2Sessions } from "./client-sessions.ts";
import { LOCAL_CONNECT_TIMEOUT_MS } from "../local-service-pool.ts";
import { forwardedRequest, isGrpc, streamHead, streamProblem } from "./h2-headers.ts";
import type { IdleStreams } from "./idle-streams.ts";
import { answered, StreamReporter } from "./stream-report.ts";
import { relayStream } from "./stream-relay.ts";
import type { RelayEnd } from "./relay-contract.ts";
import { relayToHttp1 } from "./http1-upstream.ts";
import type { Http1Pool } from "../transport/h1/index.ts";
import type { H2ServerStream } from "./wire/server-stream.ts";

export interface InboundH2Deps {
  upstream: URL;
  /** The local service's HTTP/1.1 connections, for calls translated to HTTP/1.1 (its Service declares the port protocol http). */
  http1: Http1Pool;
  metrics: ProxyMetrics;
  tracker: InflightTracker;
  /** Largest body of a plain HTTP/2 request, and largest message of a gRPC call (whose stream may be long). */
  maxBodyBytes: number;
  /** Streams silent for too long are reset. */
  idleStreams: IdleStreams;
  policies: () => InboundPolicies;
  accessLog?: AccessLog;
  tracer?: Tracer;
}

/** The service's idle HTTP/2 session closes after this long; the next call opens another. */
const UPSTREAM_IDLE_MS = 60_000;
const NOTHING: readonly string[] = [];

export function inboundH2(deps: InboundH2Deps) {
  const reporter = new StreamReporter(deps, "inbound");
  const upstream = new H2Sessions({ connectTimeoutMs: LOCAL_CONNECT_TIMEOUT_MS, idleTimeoutMs: UPSTREAM_IDLE_MS });
  const authority = deps.upstream.host;

  function onStream(stream: H2ServerStream, headers: IncomingHttpHeaders, caller: string | undefined): void {
    const started = performance.now();
    const head = streamHead(headers);
    const grpc = isGrpc(headers);
    const peer = caller!;
    deps.tracker.start();
    const call = { head, grpc, started };
    // A span begun when the stream is answered, if it was refused: from when it arrived.
    const report = (end: RelayEnd, span = deps.tracer?.begin(head.fields, started)) => reporter.report(call, end, peerService(peer), peer, span);
    const refuse = (e: ErrorParts) => report(answered(stream, e, grpc));

    const problem = streamProblem(headers);
    if (problem !== undefined) {
      deps.metrics.refused.inc({ direction: "inbound", reason: problem.reason });
      return refuse(errorParts("bad-request", problem.detail));
    }
    const policies = deps.policies();
    const forward = (authn: Authenticated | ErrorParts) => {
      if (stream.closed) return report({ status: CLIENT_CLOSED_STATUS, grpcStatus: undefined, failure: undefined, limit: undefined, headAt: 0 });
      if (isRefusal(authn)) return refuse(authn);
      const seen = headersSeen(head.fields, NOTHING, authn);
      const target = admitInbound(deps.metrics, policies, peer, head.method, head.pathAndQuery, seen?.fields ?? head.fields, NOTHING, authn.user);
      if (typeof target !== "string") return refuse(target);
      const span = deps.tracer?.begin(head.fields, started);
      const added: Record<string, string> = { ":path": target, [CLIENT_ID_HEADER]: peer };
      for (const [name, value] of authn.claimHeaders) added[name] = value;
      if (span !== undefined) added.traceparent = traceParentValue(span);
      const out = forwardedRequest(headers, droppedFor(authn.strip?.names ?? NOTHING, span), added);
      const done = (end: RelayEnd) => report(end, span);
      if (policies.upstreamHttp === "http1") {
        if (grpc) return refuse(errorParts("bad-request", `a gRPC call needs HTTP/2, and this service's port ${deps.upstream.port || 80} is declared protocol http (HTTP/1.1)`));
        return relayToHttp1(stream, deps.http1, out, { maxBodyBytes: deps.maxBodyBytes, idle: deps.idleStreams, upstreamName: `local service ${deps.upstream.origin}` }, done);
      }
      relayStream(stream, upstream.session(authority), out, { maxBodyBytes: deps.maxBodyBytes, timeoutMs: 0, perTryMs: 0, upstreamIsProxy: false, grpc, takesTrailers: headers.te === "trailers", idle: deps.idleStreams, upstreamName: `local service ${deps.upstream.origin}` }, done);
    };
    const authn = authenticateInbound(deps.metrics, policies, peer, head.fields, NOTHING);
    if (!(authn instanceof Promise)) return forward(authn);
    // The body waits in the stream's window while the token is verified; the relay resumes it.
    stream.pause();
    authn.then(forward, () => refuse(INTERNAL_ERROR));
  }

  return { onStream, close: () => upstream.close() };
}
