/**
 * The live numbers: every sidecar's /metrics scraped each tick, and per instance
 * (inbound, at its own sidecar) and per caller → service route (outbound, at the
 * caller's sidecar) the request rate, success rate and latency over the last few
 * seconds, with retries and outlier ejections as running totals.
 */
import { buckets, parseMetrics, quantile, sum, type Sample } from "./prometheus.ts";

export interface Watched {
  instance: string;
  service: string;
  /** What the service is written in, for the table. */
  lang: string;
  note?: string;
  adminPort: number;
  calls: string[];
  /** Only calls out (the load generator): no inbound row. */
  client?: boolean;
}

export interface Rates {
  rps: number;
  /** Share of requests not answered 5xx, 0..1; undefined with no requests. */
  success: number | undefined;
  p50: number | undefined;
  p99: number | undefined;
  /** Since the start. */
  requests: number;
  /** 5xx answers since the start. */
  failed: number;
}

export interface InstanceRow extends Rates {
  instance: string;
  service: string;
  lang: string;
  note?: string;
  /** Requests received since the start, by calling service (from the caller's verified SPIFFE ID). */
  callers: Record<string, number>;
}

export interface RouteRow extends Rates {
  caller: string;
  service: string;
  retries: number;
  ejections: number;
}

interface Scrape {
  t: number;
  samples: Sample[];
}

const REQUESTS = "mesh_requests_total";
const LATENCY = "mesh_request_duration_ms";
const KEEP_MS = 30_000;

export class MeshStats {
  private history = new Map<string, Scrape[]>();

  constructor(readonly watched: Watched[], private readonly windowMs = 5000) {}

  async scrape(): Promise<void> {
    await Promise.all(
      this.watched.map(async (w) => {
        const res = await fetch(`http://127.0.0.1:${w.adminPort}/metrics`, { signal: AbortSignal.timeout(1000) }).catch(() => undefined);
        if (!res?.ok) return;
        const samples = parseMetrics(await res.text());
        const list = this.history.get(w.instance) ?? [];
        const t = performance.now();
        list.push({ t, samples });
        // Keep the first scrape (the baseline) and the recent ones.
        while (list.length > 2 && list[1]!.t < t - KEEP_MS) list.splice(1, 1);
        this.history.set(w.instance, list);
      }),
    );
  }

  /** The latest scrape and the one about `windowMs` before it (or the first). */
  private window(instance: string): { from: Scrape; to: Scrape } | undefined {
    const list = this.history.get(instance);
    if (!list?.length) return undefined;
    const to = list[list.length - 1]!;
    const from = [...list].reverse().find((s) => s.t <= to.t - this.windowMs) ?? list[0]!;
    return { from, to };
  }

  instances(): InstanceRow[] {
    return this.watched.filter((w) => !w.client).map((w) => {
      const win = this.window(w.instance);
      const inbound = { direction: "inbound" };
      const callers: Record<string, number> = {};
      for (const s of win?.to.samples ?? []) if (s.name === REQUESTS && s.labels.direction === "inbound" && s.labels.peer) callers[s.labels.peer] = (callers[s.labels.peer] ?? 0) + s.value;
      return { instance: w.instance, service: w.service, lang: w.lang, note: w.note, callers, ...rates(win, inbound, inbound) };
    });
  }

  routes(): RouteRow[] {
    return this.watched.flatMap((w) =>
      w.calls.map((service) => {
        const win = this.window(w.instance);
        const match = { direction: "outbound", peer: service };
        const latest = win?.to.samples ?? [];
        return {
          caller: w.instance,
          service,
          ...rates(win, match, match),
          retries: sum(latest, "mesh_retries_total", { peer: service }),
          ejections: sum(latest, "mesh_outlier_ejections_total", { peer: service }),
        };
      }),
    );
  }
}

function rates(win: { from: Scrape; to: Scrape } | undefined, requests: Record<string, string>, latency: Record<string, string>): Rates {
  if (!win) return { rps: 0, success: undefined, p50: undefined, p99: undefined, requests: 0, failed: 0 };
  const { from, to } = win;
  const total = sum(to.samples, REQUESTS, requests);
  const count = total - sum(from.samples, REQUESTS, requests);
  const failedTotal = sum(to.samples, REQUESTS, { ...requests, status: "5xx" });
  const failed = failedTotal - sum(from.samples, REQUESTS, { ...requests, status: "5xx" });
  const seconds = (to.t - from.t) / 1000;
  const after = buckets(to.samples, LATENCY, latency);
  const before = buckets(from.samples, LATENCY, latency);
  return {
    rps: round(seconds > 0 ? count / seconds : 0, 2),
    success: count > 0 ? round((count - failed) / count, 4) : undefined,
    p50: round(quantile(0.5, after, before), 2),
    p99: round(quantile(0.99, after, before), 2),
    requests: total,
    failed: failedTotal,
  };
}

function round<T extends number | undefined>(v: T, digits: number): T {
  return (v === undefined ? v : Math.round(v * 10 ** digits) / 10 ** digits) as T;
}
