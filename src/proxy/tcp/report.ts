/** Metrics and the access-log line of carried TCP connections, one direction's. */
import type { AccessLog } from "../access-log.ts";
import type { ProxyMetrics } from "../metrics.ts";
import type { CarriedResult } from "./carried.ts";
import type { PipeReport } from "./pipe.ts";

export class TcpReporter {
  constructor(
    private readonly metrics: ProxyMetrics,
    private readonly direction: "inbound" | "outbound",
    private readonly accessLog: AccessLog | undefined,
  ) {}

  opened(): void {
    this.metrics.tcpOpen.inc({ direction: this.direction });
  }

  /**
   * `peer`: the peer service (a metric label); `logPeer`: as the log names it (the caller's
   * SPIFFE ID inbound, the destination outbound); `authority`: service:port.
   */
  ended(peer: string, logPeer: string, authority: string, result: CarriedResult, startedAt: number, report: PipeReport | undefined): void {
    const { metrics, direction } = this;
    metrics.tcpOpen.inc({ direction }, -1);
    metrics.tcpConnections.inc({ direction, peer, result });
    const received = report?.fromClient ?? 0;
    const sent = report?.fromUpstream ?? 0;
    if (received > 0) metrics.tcpReceived.inc({ direction, peer }, received);
    if (sent > 0) metrics.tcpSent.inc({ direction, peer }, sent);
    this.accessLog?.connection(direction, authority, logPeer, result, performance.now() - startedAt, received, sent);
  }
}
