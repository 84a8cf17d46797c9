/**
 * The access-log line and span of one WebSocket upgrade, as Envoy writes them: for an
 * upgrade refused or failed, with its status when it is answered; for one that opened,
 * with status 101 when the session ends, its duration the session's. The span's
 * traceparent goes upstream with the handshake, so the service continues the trace.
 */
import type { AccessLog } from "../access-log.ts";
import type { ReplyCause } from "../errors.ts";
import type { Tracer } from "../tracing/tracer.ts";
import { traceParentValue } from "../tracing/tracer.ts";
import { pathAndQuery } from "./upgrade-request.ts";

export interface UpgradeObservers {
  direction: "inbound" | "outbound";
  accessLog?: AccessLog;
  tracer?: Tracer;
}

/** Reports how the upgrade ended: once, with its status; a `cause` when the proxy answered it itself. */
export type UpgradeOutcome = (status: number, cause?: ReplyCause) => void;

const NOTHING: UpgradeOutcome = () => {};

/**
 * Starts observing `req`; `upstream`: the handshake's headers, which take the span's
 * traceparent; `peer`: the caller's SPIFFE ID inbound, the destination outbound.
 */
export function observeUpgrade(obs: UpgradeObservers, req: Request, upstream: Headers | undefined, peer: string): UpgradeOutcome {
  const { accessLog, tracer } = obs;
  if (accessLog === undefined && tracer === undefined) return NOTHING;
  const fields: string[] = [];
  req.headers.forEach((value, name) => fields.push(name, value));
  const head = { method: req.method, pathAndQuery: pathAndQuery(req), host: req.headers.get("host") ?? "", fields };
  const span = tracer?.begin(fields);
  if (span !== undefined) upstream?.set("traceparent", traceParentValue(span));
  const started = performance.now();
  let over = false;
  return (status, cause) => {
    if (over) return;
    over = true;
    accessLog?.request(obs.direction, head, status, performance.now() - started, peer, undefined, cause);
    if (span !== undefined) tracer!.end(span, obs.direction === "inbound" ? "server" : "client", head, status, peer, cause?.error);
  };
}
