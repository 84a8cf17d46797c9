/**
 * A small Prometheus registry: counters and histograms keyed by a fixed label set.
 * Series are created on first use and found by a string key, so recording costs one
 * map lookup; rendering happens only when /metrics is scraped.
 */
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

export class Counter extends Metric {
  private series = new Map<string, { labels: Labels; value: number }>();
  constructor(name: string, help: string, type: "counter" | "gauge" = "counter") {
    super(name, help, type);
  }
  inc(labels: Labels = {}, by = 1): void {
    const key = keyOf(labels);
    const s = this.series.get(key);
    if (s) s.value += by;
    else this.series.set(key, { labels, value: by });
  }
  set(labels: Labels, value: number): void {
    this.series.set(keyOf(labels), { labels, value });
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

export class Histogram extends Metric {
  private series = new Map<string, { labels: Labels; counts: number[]; sum: number; count: number }>();
  constructor(name: string, help: string, readonly buckets = LATENCY_BUCKETS_MS) {
    super(name, help, "histogram");
  }
  observe(labels: Labels, value: number): void {
    const key = keyOf(labels);
    let s = this.series.get(key);
    if (!s) this.series.set(key, (s = { labels, counts: new Array(this.buckets.length).fill(0), sum: 0, count: 0 }));
    for (let i = 0; i < this.buckets.length; i++) if (value <= this.buckets[i]!) s.counts[i]!++;
    s.sum += value;
    s.count++;
  }
  render(): string[] {
    const lines: string[] = [];
    for (const s of this.series.values()) {
      this.buckets.forEach((b, i) => lines.push(`${this.name}_bucket${labelText({ ...s.labels, le: String(b) })} ${s.counts[i]}`));
      lines.push(`${this.name}_bucket${labelText({ ...s.labels, le: "+Inf" })} ${s.count}`);
      lines.push(`${this.name}_sum${labelText(s.labels)} ${s.sum}`, `${this.name}_count${labelText(s.labels)} ${s.count}`);
    }
    return lines;
  }
}

export class Registry {
  private metrics: Metric[] = [];
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

/** Every metric the proxy exports, in one place so names stay consistent. */
export function proxyMetrics(registry = new Registry()) {
  return {
    registry,
    requests: registry.counter("mesh_requests_total", "Requests handled, by direction, peer service and status class."),
    latency: registry.histogram("mesh_request_duration_ms", "Request latency to response headers, milliseconds."),
    retries: registry.counter("mesh_retries_total", "Retries sent, by destination."),
    ejections: registry.counter("mesh_outlier_ejections_total", "Endpoints ejected by outlier detection."),
    openCircuits: registry.gauge("mesh_circuit_open", "1 while a destination's circuit-breaker limit is reached."),
    tlsFailures: registry.counter("mesh_tls_failures_total", "Refused TLS peers, by direction and reason."),
    refused: registry.counter("mesh_requests_refused_total", "Requests refused before forwarding as malformed or ambiguous, by direction and reason."),
    connections: registry.counter("mesh_connections_total", "Connections accepted or opened, by direction."),
    openConnections: registry.gauge("mesh_connections_open", "Connections open now, by direction."),
    websocketUpgrades: registry.counter("mesh_websocket_upgrades_total", "WebSocket upgrades attempted, by direction, peer service and status class (1xx: upgraded)."),
    websocketsOpen: registry.gauge("mesh_websockets_open", "WebSockets relayed now, by direction."),
  };
}
export type ProxyMetrics = ReturnType<typeof proxyMetrics>;

export function statusClass(status: number): string {
  return `${Math.floor(status / 100)}xx`;
}
