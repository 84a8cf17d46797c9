/**
 * What a gRPC call's status means to the proxy: a gRPC error rides on HTTP 200, so the
 * HTTP status alone would call every call a success, in the metrics and to outlier
 * detection.
 */
import { CLIENT_CLOSED_STATUS } from "../errors.ts";
import type { ProxyMetrics } from "../metrics.ts";
import { grpcStatusOf } from "./local-reply.ts";
import type { RelayEnd } from "./relay-contract.ts";

const CANCELLED = "1";

/**
 * Statuses that say the server failed, which count against its endpoint as a 5xx does:
 * UNKNOWN, DEADLINE_EXCEEDED, INTERNAL, UNAVAILABLE, DATA_LOSS (Envoy's gRPC-to-HTTP
 * mapping makes each a 5xx for its outlier detection).
 */
const SERVER_FAILURES: ReadonlySet<string> = new Set(["2", "4", "13", "14", "15"]);

/** The codes gRPC defines, 0 OK to 16 UNAUTHENTICATED, as written on the wire. */
const KNOWN_CODES: ReadonlySet<string> = new Set(Array.from({ length: 17 }, (_, code) => String(code)));
const UNKNOWN = "2";

/**
 * The status an upstream's `grpc-status` says, as the proxy records it: one of the
 * defined codes, or 2 UNKNOWN for anything else (a code past 16, "OK", "1.5", a repeated
 * field), as gRPC clients read a code they do not know. What a service writes there must
 * not become a metric label or a span attribute of its choosing: each distinct value
 * would be a new time series.
 */
export function grpcStatusHeard(value: string | string[] | undefined): string | undefined {
  if (value === undefined) return undefined;
  return typeof value === "string" && KNOWN_CODES.has(value) ? value : UNKNOWN;
}

export function grpcServerFailed(grpcStatus: string | undefined): boolean {
  return grpcStatus !== undefined && SERVER_FAILURES.has(grpcStatus);
}

/**
 * The status a gRPC call's client received: the upstream's, the proxy's own answer's, 1
 * CANCELLED when the client left first; "none" for a response that carried none.
 */
export function grpcCode(end: Pick<RelayEnd, "status" | "grpcStatus" | "failure">): string {
  return end.grpcStatus ?? (end.status === CLIENT_CLOSED_STATUS ? CANCELLED : end.failure !== undefined ? String(grpcStatusOf(end.status)) : "none");
}

/** Counts a gRPC call in mesh_grpc_responses_total by the status its client received. */
export function recordGrpc(metrics: ProxyMetrics, direction: "inbound" | "outbound", peer: string, code: string): void {
  metrics.grpcResponses.inc({ direction, peer, grpc_status: code });
}
