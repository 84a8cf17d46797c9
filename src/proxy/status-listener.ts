/**
 * The status listener: /live, /ready and /metrics only, for the kubelet's probes and
 * Prometheus, on an address other pods can reach, while the admin API (and its
 * /config_dump) stays on loopback. It is built on the data path's listener, so it gets
 * the same strict parsing, idle timeouts and an accept cap: a flood on a port the pod
 * network reaches must not spend the descriptors the data path needs.
 */
import type { ConnectionBudget } from "../core/connection-budget.ts";
import type { Listen } from "./proxy.ts";
import { isStatusPath, statusAnswer, STATUS_PATHS, type StatusState } from "./status-routes.ts";
import type { ConnectionHandler } from "./transport/h1-server/connection.ts";
import { H1Listener } from "./transport/h1-server/listener.ts";

/** Probes and scrapers keep a handful of connections; this bounds what anyone else can hold. */
export const STATUS_MAX_CONNECTIONS = 64;
const TEXT = "text/plain; charset=utf-8";
const NOT_FOUND = `not found; this port serves ${STATUS_PATHS.join(", ")}\n`;
const NO_UPGRADE = `HTTP/1.1 404 Not Found\r\ncontent-type: ${TEXT}\r\nconnection: close\r\ncontent-length: ${NOT_FOUND.length}\r\n\r\n${NOT_FOUND}`;

export interface StatusEvents {
  /** A request refused as malformed; `reason` is a fixed label. */
  onRefused(reason: string): void;
  onOverLimit(): void;
}

function statusHandler(state: StatusState, events: StatusEvents): ConnectionHandler {
  return {
    refused: (reason) => events.onRefused(reason),
    upgrade(conn) {
      conn.write(NO_UPGRADE);
      conn.close();
    },
    request(req, res) {
      const { method, pathAndQuery } = req.head;
      const query = pathAndQuery.indexOf("?");
      const path = query < 0 ? pathAndQuery : pathAndQuery.slice(0, query);
      if (method !== "GET" && method !== "HEAD")
        return res.respond(405, { "content-type": TEXT, allow: "GET, HEAD", connection: "close" }, `method ${method} not allowed; this port is read-only\n`);
      if (!isStatusPath(path)) return res.respond(404, { "content-type": TEXT }, NOT_FOUND);
      const answer = statusAnswer(state, path);
      res.respond(answer.status, { "content-type": answer.contentType, "cache-control": "no-store" }, answer.body);
    },
  };
}

export function statusListener(state: StatusState, listen: Listen, budget: ConnectionBudget, events: StatusEvents): H1Listener {
  return new H1Listener({
    hostname: listen.address,
    port: listen.port,
    // Probes send no bodies: a body is refused (400 on GET and HEAD, 413 otherwise) before the handler sees it.
    limits: { maxBodyBytes: 0, idleTimeoutS: 10 },
    budget,
    handler: statusHandler(state, events),
    events: { onRefused: () => undefined, onOpen: () => undefined, onOverLimit: () => events.onOverLimit() },
  });
}
