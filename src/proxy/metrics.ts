/**
 * A small Prometheus registry: counters and histograms keyed by a fixed label set.
 * Series are created on first use and found by a string key, so recording costs one
 * map lookup; rendering happens only when /metrics is scraped.
 */
import type { ReplyCause } from "./errors.ts";

type Labels = Record<string, string>;

const escape = (v: string) => v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
const labelText = (l: Labels) => {
  const parts = Object.entries(l).map(([k, v]) => `${k}="${escape(v)}"`);
  return parts.length ? `{${parts.join(",")}}` : "";
};

/** A series' identity, cheap to build on every request: rendering and escaping wait for a scrape. */
const keyOf = (l: Labels): string => {
  let key = "";
  for (const name in l) key += `${name}\u0001${l[name]}\u0002`;
  return key;
};

abstract class Metric {
  constructor(readonly name: string, readonly help: string, readonly type: string) {}
  abstract render(): string[];
  header(): string[] {
    return [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} ${this.type}`];
  }
}

/** One counter series; hold it to count without a lookup. */
export interface CounterSeries {
  readonly labels: Labels;
  value: number;
}

export class Counter extends Metric {
  private series = new Map<string, CounterSeries>();
  constructor(name: string, help: string, type: "counter" | "gauge" = "counter") {
    super(name, help, type);
  }
  /** The series of `labels`, created at 0 if new. */
  of(labels: Labels): CounterSeries {
    const key = keyOf(labels);
    let s = this.series.get(key);
    if (!s) this.series.set(key, (s = { labels, value: 0 }));
    return s;
  }
  inc(labels: Labels = {}, by = 1): void {
    this.of(labels).value += by;
  }
  set(labels: Labels, value: number): void {
    this.of(labels).value = value;
  }
  get(labels: Labels = {}): number {
    return this.series.get(keyOf(labels))?.value ?? 0;
  }
  render(): string[] {
    return [...this.series.values()].map((s) => `${this.name}${labelText(s.labels)} ${s.value}`);
  }
}

/** Latency buckets in milliseconds, as linkerd2-proxy reports them. */
export const LATENCY_BUCKETS_MS = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000];

/** One histogram series; hold it to observe without a lookup. */
export class HistogramSeries {
  /** Per bucket, not cumulative: an observation touches one slot; render() sums. */
  readonly counts: number[];
  sum = 0;
  count = 0;
  constructor(
    readonly labels: Labels,
    private readonly buckets: readonly number[],
  ) {
    this.counts = new Array<number>(buckets.length).fill(0);
  }
  observe(value: number): void {
    const b = this.buckets;
    for (let i = 0; i < b.length; i++) {
      if (value <= b[i]!) {
        this.counts[i]!++;
        break;
      }
    }
    this.sum += value;
    this.count++;
  }
}

export class Histogram extends Metric {
  private series = new Map<string, HistogramSeries>();
  constructor(name: string, help: string, readonly buckets = LATENCY_BUCKETS_MS) {
    super(name, help, "histogram");
  }
  of(labels: Labels): HistogramSeries {
    const key = keyOf(labels);
    let s = this.series.get(key);
    if (!s) this.series.set(key, (s = new HistogramSeries(labels, this.buckets)));
    return s;
  }
  observe(labels: Labels, value: number): void {
    this.of(labels).observe(value);
  }
  render(): string[] {
    const lines: string[] = [];
    for (const s of this.series.values()) {
      let cumulative = 0;
      this.buckets.forEach((b, i) => {
        cumulative += s.counts[i]!;
        lines.push(`${this.name}_bucket${labelText({ ...s.labels, le: String(b) })} ${cumulative}`);
      });
      lines.push(`${this.name}_bucket${labelText({ ...s.labels, le: "+Inf" })} ${s.count}`);
      lines.push(`${this.name}_sum${labelText(s.labels)} ${s.sum}`, `${this.name}_count${labelText(s.labels)} ${s.count}`);
    }
    return lines;
  }
}

export class Registry {
  private readonly metrics: Metric[] = [];
  /** Every metric registered, in order: for the generated reference. */
  list(): readonly Metric[] {
    return this.metrics;
  }
  counter(name: string, help: string): Counter {
    return this.add(new Counter(name, help));
  }
  gauge(name: string, help: string): Counter {
    return this.add(new Counter(name, help, "gauge"));
  }
  histogram(name: string, help: string): Histogram {
    return this.add(new Histogram(name, help));
  }
  private add<M extends Metric>(m: M): M {
    this.metrics.push(m);
    return m;
  }
  render(): string {
    return this.metrics.flatMap((m) => [...m.header(), ...m.render()]).join("\n") + "\n";
  }
}

/** The peer label of calls to a name no Service has (Istio's word for it). */
export const UNKNOWN_DESTINATION = "unknown";

/** Every metric the proxy exports, in one place so names stay consistent. */
export function proxyMetrics(registry = new Registry()) {
  return {
    registry,
    requests: registry.counter(
      "mesh_requests_total",
      `Requests handled, by direction, peer service and status class: those relayed, and those the proxy answered itself (refused by a policy, or a call to no known Service: peer "${UNKNOWN_DESTINATION}").`,
    ),
    latency: registry.histogram("mesh_request_duration_ms", "Request latency to response headers, milliseconds; outbound by peer service."),
    localReplies: registry.counter(
      "mesh_local_replies_total",
      "Requests and WebSocket upgrades the proxy answered itself instead of relaying an answer, by direction, peer service, error (the x-mesh-error it answered with) and, for an overflow, limit (x-mesh-overflow); also counted in mesh_requests_total or mesh_websocket_upgrades_total.",
    ),
    retries: registry.counter("mesh_retries_total", "Retries sent, by destination."),
    mirrored: registry.counter(
      "mesh_mirrored_total",
      "Copies of calls an HTTPRoute rule mirrors, by the mirror's service (peer) and outcome: the status class of its answer (dropped), reset (cut, or no answer in time), or skipped (an HTTP/1.1 body over 64 KiB, or cut short by its client).",
    ),
    ejections: registry.counter("mesh_outlier_ejections_total", "Endpoints ejected by outlier detection."),
    openCircuits: registry.gauge("mesh_circuit_open", "1 while a destination's circuit-breaker limit is reached."),
    pendingRequests: registry.gauge("mesh_pending_requests", "Outbound requests waiting for a connection to a destination (its circuitBreaker.maxConnections reached), by peer service."),
    tlsFailures: registry.counter(
      "mesh_tls_failures_total",
      "Refused TLS peers, by direction and reason: inbound no-certificate, untrusted (a chain to no root of the bundle), expired, not-yet-valid, trust-domain, not-a-workload-certificate or handshake; outbound peer-identity (one per refused connection). Each inbound kind, and each refused upstream endpoint, is also logged once per 10 s.",
    ),
    refused: registry.counter("mesh_requests_refused_total", "Requests refused as malformed or ambiguous, by direction and reason; those refused while their head was read are counted here only, not in mesh_requests_total."),
    keyFetchFailures: registry.counter("mesh_authentication_key_fetch_failures_total", "Fetches of a RequestAuthentication's jwksUri that failed, by uri and whether keys held went on serving (stale=true) or tokens were refused (stale=false)."),
    unauthenticated: registry.counter("mesh_authentication_failed_total", "Inbound requests refused by a RequestAuthentication (401), by peer service and reason (expired, signature, issuer, ...)."),
    denied: registry.counter("mesh_authorization_denied_total", "Inbound requests refused by authorization (403), by peer service and policy (namespace/name, or no-allow-matched)."),
    dryRunDenied: registry.counter("mesh_authorization_dry_run_denied_total", "Inbound requests let in that dry-run AuthorizationPolicies would refuse, by peer service and policy."),
    rateLimited: registry.counter("mesh_rate_limited_total", "Inbound requests refused by a RateLimitPolicy (429), by peer service and limit (total or caller)."),
    spansExported: registry.counter("mesh_trace_spans_exported_total", "Trace spans the collector accepted."),
    spansDropped: registry.counter("mesh_trace_spans_dropped_total", "Trace spans not exported, by reason (queue-full, export-failed)."),
    connections: registry.counter("mesh_connections_total", "Connections accepted or opened, by direction."),
    openConnections: registry.gauge("mesh_connections_open", "Connections open now, by direction."),
    certificateExpiry: registry.gauge("mesh_certificate_expiry_seconds", "When the sidecar's own certificate ends, in seconds since the epoch: alert on it minus time()."),
    connectionsRetired: registry.counter(
      "mesh_connections_retired_total",
      "Inbound mTLS connections ended for their certificates: asked to move (certificate-expiring, rotation) or cut (certificate-expired, trust-withdrawn), by reason.",
    ),
    connectionsRefused: registry.counter("mesh_connections_refused_total", "Connections closed at accept because a listener held its limit (--max-connections; the status listener's own), by direction."),
    websocketUpgrades: registry.counter("mesh_websocket_upgrades_total", "WebSocket upgrades attempted, by direction, peer service and status class (1xx: upgraded), refused ones included; an upgrade is not counted in mesh_requests_total."),
    grpcResponses: registry.counter("mesh_grpc_responses_total", "gRPC calls ended, by direction, peer service and grpc_status (the code the client received; 1 CANCELLED when the client left first); also counted in mesh_requests_total."),
    websocketsOpen: registry.gauge("mesh_websockets_open", "WebSockets relayed now, by direction."),
    tcpConnections: registry.counter(
      "mesh_tcp_connections_total",
      "Opaque TCP connections (a Service's tcp ports) ended, by direction, peer service and result: ok, reset, idle, max-duration, drain, or why one was refused (denied, no-such-port, connect-failure, ...).",
    ),
    tcpReceived: registry.counter("mesh_tcp_received_bytes_total", "Bytes opaque TCP connections carried from their client, by direction and peer service; counted when a connection ends."),
    tcpSent: registry.counter("mesh_tcp_sent_bytes_total", "Bytes opaque TCP connections carried to their client, by direction and peer service; counted when a connection ends."),
    tcpOpen: registry.gauge("mesh_tcp_connections_open", "Opaque TCP connections carried now, by direction."),
  };
}
export type ProxyMetrics = ReturnType<typeof proxyMetrics>;

/** One answer the proxy made itself, in mesh_local_replies_total. */
export function countLocalReply(metrics: ProxyMetrics, direction: "inbound" | "outbound", peer: string, cause: ReplyCause): void {
  const { error, limit } = cause;
  metrics.localReplies.inc(limit === undefined ? { direction, peer, error } : { direction, peer, error, limit });
}

export function statusClass(status: number): string {
  return `${Math.floor(status / 100)}xx`;
}

/**
 * Records the requests of one direction by peer and status class. Each combination's
 * series is looked up once, not per request: no label object or key string on the hot path.
 */
export class RequestRecorder {
  /** peer → series by status class (index: status / 100). */
  private readonly counts = new Map<string, (CounterSeries | undefined)[]>();
  private readonly latencies = new Map<string, HistogramSeries>();

  constructor(
    private readonly metrics: ProxyMetrics,
    private readonly direction: "inbound" | "outbound",
    /** Outbound latency is by destination; inbound, by direction only (callers are many). */
    private readonly latencyByPeer: boolean,
  ) {}

  /** Counts an answer the proxy made itself (rare: its labels are built per call). */
  answeredItself(peer: string, cause: ReplyCause): void {
    countLocalReply(this.metrics, this.direction, peer, cause);
  }

  record(peer: string, status: number, latencyMs: number): void {
    let byClass = this.counts.get(peer);
    if (byClass === undefined) this.counts.set(peer, (byClass = []));
    const cls = (status / 100) | 0;
    (byClass[cls] ??= this.metrics.requests.of({ direction: this.direction, peer, status: statusClass(status) })).value++;
    const byPeer = this.latencyByPeer ? peer : "";
    let latency = this.latencies.get(byPeer);
    if (latency === undefined)
      this.latencies.set(byPeer, (latency = this.metrics.latency.of(this.latencyByPeer ? { direction: this.direction, peer } : { direction: this.direction })));
    latency.observe(latencyMs);
  }
}
