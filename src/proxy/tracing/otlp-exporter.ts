/**
 * Sends finished spans to an OpenTelemetry collector as OTLP/HTTP JSON (`POST
 * …/v1/traces`), in batches: every second, or at once when a batch is full. It never
 * holds up a request: spans wait in a bounded queue, one export is in flight at a time,
 * and what does not fit or fails to send is dropped and counted
 * (mesh_trace_spans_dropped_total), with a warning at most every 10 s.
 */
import type { Logger } from "../../core/log.ts";
import type { ProxyMetrics } from "../metrics.ts";

/** A span as OTLP/JSON writes it: hex ids, times as decimal strings of nanoseconds. */
export interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  /** 2 SERVER, 3 CLIENT. */
  kind: 2 | 3;
  startTimeUnixNano: string;
  endTimeUnixNano: string;
  attributes: { key: string; value: { stringValue: string } | { intValue: string } }[];
  /** 0 unset, 2 error. */
  status: { code: 0 | 2 };
}

const FLUSH_EVERY_MS = 1000;
const BATCH_SPANS = 512;
const MAX_QUEUED_SPANS = 4096;
const EXPORT_TIMEOUT_MS = 5000;
const WARN_EVERY_MS = 10_000;

export class OtlpExporter {
  private queue: OtlpSpan[] = [];
  private sending: Promise<void> | undefined;
  private readonly timer: Timer;
  private lastWarning = 0;

  constructor(
    private readonly url: URL,
    /** Resource attributes: who emits the spans (service.name and the like). */
    private readonly resource: Record<string, string>,
    private readonly metrics: ProxyMetrics,
    private readonly log: Logger,
  ) {
    this.timer = setInterval(() => void this.flush(), FLUSH_EVERY_MS);
    this.timer.unref();
  }

  add(span: OtlpSpan): void {
    if (this.queue.length >= MAX_QUEUED_SPANS) return this.dropped(1, "queue-full", "the collector does not keep up");
    this.queue.push(span);
    if (this.queue.length >= BATCH_SPANS && this.sending === undefined) void this.flush();
  }

  /** Sends what is queued, one batch at a time; resolves when the queue is empty or an export failed. */
  flush(): Promise<void> {
    if (this.sending !== undefined || this.queue.length === 0) return this.sending ?? Promise.resolve();
    const batch = this.queue.splice(0, BATCH_SPANS);
    this.sending = this.send(batch).finally(() => {
      this.sending = undefined;
      if (this.queue.length >= BATCH_SPANS) void this.flush();
    });
    return this.sending;
  }

  /** At the end of a drain: what is queued goes out (within `ms`), and the timer stops. */
  async close(ms: number): Promise<void> {
    clearInterval(this.timer);
    const deadline = Date.now() + ms;
    while ((this.queue.length > 0 || this.sending) && Date.now() < deadline) await this.flush();
  }

  private async send(spans: OtlpSpan[]): Promise<void> {
    const body = JSON.stringify({
      resourceSpans: [
        {
          resource: { attributes: Object.entries(this.resource).map(([key, value]) => ({ key, value: { stringValue: value } })) },
          scopeSpans: [{ scope: { name: "mesh" }, spans }],
        },
      ],
    });
    try {
      const res = await fetch(this.url, { method: "POST", headers: { "content-type": "application/json" }, body, signal: AbortSignal.timeout(EXPORT_TIMEOUT_MS) });
      await res.arrayBuffer();
      if (!res.ok) return this.dropped(spans.length, "export-failed", `the collector answered ${res.status}`);
      this.metrics.spansExported.inc({}, spans.length);
    } catch (err) {
      this.dropped(spans.length, "export-failed", (err as Error).message);
    }
  }

  private dropped(count: number, reason: "queue-full" | "export-failed", why: string): void {
    this.metrics.spansDropped.inc({ reason }, count);
    const now = Date.now();
    if (now - this.lastWarning < WARN_EVERY_MS) return;
    this.lastWarning = now;
    this.log.warn({ collector: this.url.href, reason, why }, "trace spans dropped (mesh_trace_spans_dropped_total)");
  }
}
