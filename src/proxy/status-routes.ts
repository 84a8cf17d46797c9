/**
 * What the sidecar says about itself, for probes and scrapers: liveness, readiness and
 * Prometheus metrics. The admin API serves these beside /config_dump; the status listener
 * (status-listener.ts) serves only these, so it can face the pod network.
 */
import type { ProxyMetrics } from "./metrics.ts";

export interface StatusState {
  /** Why the sidecar should not be sent traffic yet (or any more), or undefined when it is ready. */
  notReady: () => string | undefined;
  metrics: ProxyMetrics;
  /** Refreshes gauges that are read rather than counted, just before a scrape. */
  beforeScrape?: () => void;
}

export interface StatusAnswer {
  status: number;
  contentType: string;
  body: string;
}

export const STATUS_PATHS = ["/live", "/ready", "/metrics"] as const;
export type StatusPath = (typeof STATUS_PATHS)[number];

const TEXT = "text/plain; charset=utf-8";
const PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8";

export function isStatusPath(path: string): path is StatusPath {
  return (STATUS_PATHS as readonly string[]).includes(path);
}

export function statusAnswer(state: StatusState, path: StatusPath): StatusAnswer {
  switch (path) {
    case "/live":
      return { status: 200, contentType: TEXT, body: "live\n" };
    case "/ready": {
      const why = state.notReady();
      return why === undefined ? { status: 200, contentType: TEXT, body: "ready\n" } : { status: 503, contentType: TEXT, body: `not ready: ${why}\n` };
    }
    case "/metrics":
      state.beforeScrape?.();
      return { status: 200, contentType: PROMETHEUS_TEXT, body: state.metrics.registry.render() };
  }
}
