/** The sidecar's metrics, as its /metrics page declares them. */
import { proxyMetrics } from "../proxy/metrics.ts";
import { code, table, text } from "./markdown.ts";

export function renderMetrics(): string {
  const intro = "Served in Prometheus text format at `/metrics` on the admin listener (and the status listener, when set):";
  const rows = proxyMetrics()
    .registry.list()
    .map((m) => [code(m.name, true), m.type, text(m.help)]);
  return [intro, table(["metric", "type", "description"], rows)].join("\n\n");
}
