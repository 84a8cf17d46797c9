/** gRPC calls by the status their client received: a gRPC error rides on HTTP 200, so mesh_requests_total alone would call it a success. */
import { CLIENT_CLOSED_STATUS } from "../errors.ts";
import type { ProxyMetrics } from "../metrics.ts";
import { grpcStatusOf } from "./local-reply.ts";
import type { RelayEnd } from "./stream-relay.ts";

const CANCELLED = "1";

export function recordGrpc(metrics: ProxyMetrics, direction: "inbound" | "outbound", peer: string, end: Pick<RelayEnd, "status" | "grpcStatus" | "failure">): void {
  const code = end.grpcStatus ?? (end.status === CLIENT_CLOSED_STATUS ? CANCELLED : end.failure !== undefined ? String(grpcStatusOf(end.status)) : "none");
  metrics.grpcResponses.inc({ direction, peer, grpc_status: code });
}
