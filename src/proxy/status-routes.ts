/**
 * What the sidecar says about itself: liveness, readiness and Prometheus metrics for
 * probes and scrapers, and the running config for its operator. The status listener
 * serves the first three, so it can face the pod network; the admin listener, on
 * loopback, serves all four. Both are read-only (read-only-listener.ts).
 */
import type { ProxyMetrics } from "./metrics.ts";

export interface StatusState {
  /** Why the sidecar should not be sent traffic yet (or any more), or undefined when it is ready. */
  notReady: () => string | undefined;
  metrics: ProxyMetrics;
  /** Refreshes gauges that are read rather than counted, just before a scrape. */
  beforeScrape?: () => void;
}

export interface AdminState extends StatusState {
  configDump: () => unknown;
}

export interface StatusAnswer {
  status: number;
  contentType: string;
  body: string;
}

/** Paths and what each answers. */
export type Routes = ReadonlyMap<string, () => StatusAnswer>;

const TEXT = "text/plain; charset=utf-8";
const PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8";

/** /live, /ready and /metrics: nothing about the config, for the pod network. */
export function statusRoutes(state: StatusState): Routes {
  return new Map<string, () => StatusAnswer>([
    ["/live", () => ({ status: 200, contentType: TEXT, body: "live\n" })],
    [
      "/ready",
      () => {
        const why = state.notReady();
        return why === undefined ? { status: 200, contentType: TEXT, body: "ready\n" } : { status: 503, contentType: TEXT, body: `not ready: ${why}\n` };
      },
    ],
    [
      "/metrics",
      () => {
        state.beforeScrape?.();
        return { status: 200, contentType: PROMETHEUS_TEXT, body: state.metrics.registry.render() };
      },
    ],
  ]);
}

/** The status routes and /config_dump, for loopback. */
export function adminRoutes(state: AdminState): Routes {
  return new Map([...statusRoutes(state), ["/config_dump", () => ({ status: 200, contentType: "application/json", body: JSON.stringify(state.configDump()) })]]);
}
