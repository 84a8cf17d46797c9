/**
 * The proxy's admin API, loopback only by default: liveness, readiness, Prometheus
 * metrics and the running config. Read-only: nothing here changes state, on any method.
 */
import { Hono } from "hono";
import type { Server } from "bun";
import { STATUS_PATHS, statusAnswer, type StatusState } from "./status-routes.ts";

export interface AdminState extends StatusState {
  configDump: () => unknown;
}

export function adminApp(state: AdminState): Hono {
  const app = new Hono();
  for (const path of STATUS_PATHS)
    app.get(path, (c) => {
      const answer = statusAnswer(state, path);
      return c.body(answer.body, answer.status as 200 | 503, { "content-type": answer.contentType });
    });
  app.get("/config_dump", (c) => c.json(state.configDump()));
  app.all("*", (c) => c.text("not found; try /live, /ready, /metrics, /config_dump\n", c.req.method === "GET" ? 404 : 405));
  return app;
}

export function startAdmin(state: AdminState, hostname: string, port: number): Server<undefined> {
  return Bun.serve({ hostname, port, fetch: adminApp(state).fetch });
}
