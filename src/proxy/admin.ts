/**
 * The proxy's admin API, loopback only by default: liveness, readiness, Prometheus
 * metrics and the running config. Read-only: nothing here changes state, on any method.
 */
import { Hono } from "hono";
import type { Server } from "bun";
import type { ProxyMetrics } from "./metrics.ts";

export interface AdminState {
  ready: () => boolean;
  configDump: () => unknown;
  metrics: ProxyMetrics;
  /** Refreshes gauges that are read rather than counted, just before a scrape. */
  beforeScrape?: () => void;
}

export function adminApp(state: AdminState): Hono {
  const app = new Hono();
  app.get("/live", (c) => c.text("live\n"));
  app.get("/ready", (c) => (state.ready() ? c.text("ready\n") : c.text("not ready\n", 503)));
  app.get("/metrics", (c) => {
    state.beforeScrape?.();
    return c.body(state.metrics.registry.render(), 200, { "content-type": "text/plain; version=0.0.4; charset=utf-8" });
  });
  app.get("/config_dump", (c) => c.json(state.configDump()));
  app.all("*", (c) => c.text("not found; try /live, /ready, /metrics, /config_dump\n", c.req.method === "GET" ? 404 : 405));
  return app;
}

export function startAdmin(state: AdminState, hostname: string, port: number): Server<undefined> {
  return Bun.serve({ hostname, port, fetch: adminApp(state).fetch });
}
