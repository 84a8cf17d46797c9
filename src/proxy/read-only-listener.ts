/**
 * The sidecar's own HTTP ports, the status listener (/live, /ready, /metrics for the
 * kubelet's probes and Prometheus on the pod network) and the admin listener (the same and
 * /config_dump, on loopback): read-only, GET and HEAD only. They run on the data path's
 * listener, so they get the same strict parsing, idle timeouts and an accept cap: a flood,
 * from the pod network or from a process beside the sidecar, must not spend the
 * descriptors the data path needs.
 */
import type { ConnectionBudget } from "../core/connection-budget.ts";
import type { Listen } from "./proxy-options.ts";
import type { Routes } from "./status-routes.ts";
import type { ConnectionHandler } from "./transport/h1-server/connection.ts";
import { H1Listener } from "./transport/h1-server/listener.ts";
import { closingResponse } from "./transport/h1-server/responder.ts";

/** Probes, scrapers and an operator keep a handful of connections; this bounds what anyone else can hold, per port. */
export const READ_ONLY_MAX_CONNECTIONS = 64;
const TEXT = "text/plain; charset=utf-8";

export interface ReadOnlyEvents {
  /** A request refused as malformed; `reason` is a fixed label. */
  onRefused(reason: string): void;
  onOverLimit(): void;
}

function readOnlyHandler(routes: Routes, events: ReadOnlyEvents): ConnectionHandler {
  const notFound = `not found; this port serves ${[...routes.keys()].join(", ")}\n`;
  const noUpgrade = closingResponse({ status: 404, headers: { "content-type": TEXT }, body: notFound });
  return {
    refused: (reason) => events.onRefused(reason),
    upgrade(conn) {
      conn.write(noUpgrade);
      conn.close();
    },
    request(req, res) {
      const { method, pathAndQuery } = req.head;
      const query = pathAndQuery.indexOf("?");
      const path = query < 0 ? pathAndQuery : pathAndQuery.slice(0, query);
      if (method !== "GET" && method !== "HEAD")
        return res.respond(405, { "content-type": TEXT, allow: "GET, HEAD", connection: "close" }, `method ${method} not allowed; this port is read-only\n`);
      const route = routes.get(path);
      if (route === undefined) return res.respond(404, { "content-type": TEXT }, notFound);
      const answer = route();
      res.respond(answer.status, { "content-type": answer.contentType, "cache-control": "no-store" }, answer.body);
    },
  };
}

export function readOnlyListener(routes: Routes, listen: Listen, budget: ConnectionBudget, events: ReadOnlyEvents): H1Listener {
  return new H1Listener({
    hostname: listen.address,
    port: listen.port,
    // No route takes a body: one is refused (400 on GET and HEAD, 413 otherwise) before the handler sees it.
    limits: { maxBodyBytes: 0, idleTimeoutS: 10 },
    budget,
    handler: readOnlyHandler(routes, events),
    events: { onRefused: () => undefined, onOpen: () => undefined, onOverLimit: () => events.onOverLimit() },
  });
}
