/**
 * A stream is over: its metrics (by status class, and by gRPC status for a gRPC call),
 * its access-log line and its span, the same way on both sides, relayed or answered by
 * the proxy itself.
 */
import type { AccessLog, LoggedHead } from "../access-log.ts";
import type { ErrorParts, ProxyFailure, ReplyCause } from "../errors.ts";
import type { InflightTracker } from "../inflight.ts";
import { RequestRecorder, type ProxyMetrics } from "../metrics.ts";
import type { ActiveSpan, Tracer } from "../tracing/tracer.ts";
import { grpcCode, recordGrpc } from "./grpc-outcome.ts";
import { replyLocally } from "./local-reply.ts";
import type { RelayEnd } from "./relay-contract.ts";
import type { H2ServerStream } from "./wire/server-stream.ts";

export interface StreamReportDeps {
  metrics: ProxyMetrics;
  tracker: InflightTracker;
  accessLog?: AccessLog;
  tracer?: Tracer;
}

/** One stream's call: what it asked, whether it is gRPC, and since when (performance.now()). */
export interface StreamCall {
  head: LoggedHead;
  grpc: boolean;
  started: number;
}

/** The end of a stream the proxy answered with `e`, which it has now sent. */
export function answered(stream: H2ServerStream, e: ErrorParts, grpc: boolean): RelayEnd {
  return { status: replyLocally(stream, e, grpc), grpcStatus: undefined, failure: e.headers["x-mesh-error"] as ProxyFailure, limit: e.headers["x-mesh-overflow"], headAt: 0 };
}

export class StreamReporter {
  private readonly recorder: RequestRecorder;

  constructor(
    private readonly deps: StreamReportDeps,
    private readonly direction: "inbound" | "outbound",
  ) {
    // Outbound latency is by destination; inbound, by direction only (callers are many).
    this.recorder = new RequestRecorder(deps.metrics, direction, direction === "outbound");
  }

  /** `metricPeer` labels the metrics (a service name); `logPeer` names the peer in the line and span (the caller's SPIFFE ID inbound). */
  report(call: StreamCall, end: RelayEnd, metricPeer: string, logPeer: string, span: ActiveSpan | undefined): void {
    const { deps, direction } = this;
    const ms = (end.headAt || performance.now()) - call.started;
    this.recorder.record(metricPeer, end.status, ms);
    const code = call.grpc ? grpcCode(end) : undefined;
    if (code !== undefined) recordGrpc(deps.metrics, direction, metricPeer, code);
    // A failure before any response head was answered by the proxy; one after it, a reset.
    const cause: ReplyCause | undefined = end.failure !== undefined && end.headAt === 0 ? { error: end.failure, limit: end.limit } : undefined;
    if (cause !== undefined) this.recorder.answeredItself(metricPeer, cause);
    deps.accessLog?.request(direction, call.head, end.status, ms, logPeer, code, cause);
    if (span !== undefined) deps.tracer!.end(span, direction === "inbound" ? "server" : "client", call.head, end.status, logPeer, end.failure, code);
    deps.tracker.end();
  }
}
