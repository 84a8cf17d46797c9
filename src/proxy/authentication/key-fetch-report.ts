/**
 * What an operator is told when a jwksUri cannot be fetched: every failure counted in
 * mesh_authentication_key_fetch_failures_total{uri,stale}, and a warning per URI a minute
 * at most, so an outage of the key server does not flood the log.
 */
import type { Logger } from "../../core/log.ts";
import type { ProxyMetrics } from "../metrics.ts";
import type { KeyFetchFailed } from "./issuer-keys.ts";

const WARN_EVERY_MS = 60_000;

export function keyFetchReport(metrics: ProxyMetrics, log: Logger): KeyFetchFailed {
  const warned = new Map<string, number>();
  return (uri, reason, stale) => {
    metrics.keyFetchFailures.inc({ uri, stale: String(stale) });
    if (Date.now() - (warned.get(uri) ?? -Infinity) < WARN_EVERY_MS) return;
    warned.set(uri, Date.now());
    log.warn({ uri, reason }, stale ? "cannot fetch an issuer's keys; the keys held go on serving" : "cannot fetch an issuer's keys; its tokens are refused");
  };
}
