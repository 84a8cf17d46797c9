/**
 * Spans for the requests a sidecar carries: a SERVER span for each inbound request and a
 * CLIENT span for each outbound call, each continuing the trace of the request's
 * `traceparent` (keeping its sampling decision) or starting one, sampled at the configured
 * rate. Each hands its own `traceparent` on in place of the one received, so the service
 * (inbound) or the next sidecar (outbound) continues from it; the service must copy
 * `traceparent` from the requests it serves to the calls it makes, as with every mesh.
 * Only sampled spans are exported; the query is never recorded (it may hold secrets).
 * What a caller wrote (path, host, method) is cut at a fixed length, as Envoy cuts the
 * path tag at 256: a caller may force sampling, and spans wait in a queue of fixed count
 * while the collector is slow, so only their size bounds what they hold.
 */
import { pathOf } from "../../core/normal-path.ts";
import type { RequestHead } from "../transport/h1/request-parse.ts";
import type { OtlpExporter, OtlpSpan } from "./otlp-exporter.ts";
import { formatTraceParent, newSpanId, newTraceId, traceParentOf } from "./trace-context.ts";

export interface ActiveSpan {
  traceId: string;
  spanId: string;
  /** The caller's span, when the request carried a valid traceparent. */
  parentId: string | undefined;
  sampled: boolean;
  /** Wall-clock milliseconds, fractional. */
  startMs: number;
  /** The `traceparent` header line forwarded in place of the request's own. */
  line: string;
}

/** What a span records of its request. */
export type SpanHead = Pick<RequestHead, "method" | "pathAndQuery" | "host">;

/** The value of the `traceparent` header a span hands on, for a request built as Headers. */
export function traceParentValue(span: ActiveSpan): string {
  return formatTraceParent(span.traceId, span.spanId, span.sampled);
}

const wallMs = (): number => performance.timeOrigin + performance.now();
const nanos = (ms: number): string => (BigInt(Math.round(ms * 1000)) * 1000n).toString();
const KIND = { server: 2, client: 3 } as const;
/** The longest path, host and method a span records, in characters (Envoy's path tag default). */
const MAX_RECORDED = 256;

/** Cut to MAX_RECORDED, into a string of its own: the engine's substring would keep the whole value alive. */
const recorded = (value: string): string => (value.length > MAX_RECORDED ? Buffer.from(value.slice(0, MAX_RECORDED)).toString() : value);

export class Tracer {
  constructor(
    private readonly exporter: OtlpExporter,
    /** Share of new traces sampled, 0 to 1. */
    private readonly sampling: number,
    private readonly random: () => number = Math.random,
  ) {}

  /**
   * A span for the request whose fields are `fields` ([name, value, ...]), from now or from
   * `startedAt` (performance.now() time: a request answered after it had to wait).
   */
  begin(fields: readonly string[], startedAt?: number): ActiveSpan {
    const incoming = traceParentOf(fields);
    const traceId = incoming?.traceId ?? newTraceId();
    const sampled = incoming ? incoming.sampled : this.random() < this.sampling;
    const spanId = newSpanId();
    return { traceId, spanId, parentId: incoming?.parentId, sampled, startMs: startedAt === undefined ? wallMs() : performance.timeOrigin + startedAt, line: `traceparent: ${formatTraceParent(traceId, spanId, sampled)}\r\n` };
  }

  /**
   * The request is over: its span is exported if sampled. `peer`: the caller's SPIFFE ID
   * inbound, the destination outbound; `error`: the proxy's reason (x-mesh-error) when the
   * proxy answered it, as `error.type`; `grpcStatus`: a gRPC call's status, as
   * `rpc.grpc.status_code`.
   */
  end(span: ActiveSpan, kind: "server" | "client", head: SpanHead, status: number, peer: string, error?: string, grpcStatus?: string): void {
    if (!span.sampled) return;
    const out: OtlpSpan = {
      traceId: span.traceId,
      spanId: span.spanId,
      name: recorded(head.method),
      kind: KIND[kind],
      startTimeUnixNano: nanos(span.startMs),
      endTimeUnixNano: nanos(wallMs()),
      attributes: [
        { key: "http.request.method", value: { stringValue: recorded(head.method) } },
        { key: "url.path", value: { stringValue: recorded(pathOf(head.pathAndQuery)) } },
        { key: "server.address", value: { stringValue: recorded(head.host) } },
        { key: "http.response.status_code", value: { intValue: String(status) } },
        { key: kind === "server" ? "mesh.caller" : "mesh.destination", value: { stringValue: peer } },
      ],
      status: { code: status >= 500 ? 2 : 0 },
    };
    if (error !== undefined) out.attributes.push({ key: "error.type", value: { stringValue: error } });
    // OpenTelemetry's name for a gRPC call's status; its HTTP status is 200 whatever happened.
    if (grpcStatus !== undefined && grpcStatus !== "none") out.attributes.push({ key: "rpc.grpc.status_code", value: { intValue: grpcStatus } });
    if (span.parentId !== undefined) out.parentSpanId = span.parentId;
    this.exporter.add(out);
  }
}
