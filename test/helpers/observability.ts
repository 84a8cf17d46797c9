/** What sidecars report, read back in tests: spans at a loopback OTLP/HTTP collector, access-log lines. */
import { readFileSync } from "node:fs";
import { eventually } from "./wait.ts";

export interface OtlpSpanJson {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  startTimeUnixNano: string;
  endTimeUnixNano: string;
  attributes: { key: string; value: { stringValue?: string; intValue?: string } }[];
  status: { code: number };
}

export interface ExportedSpan {
  /** service.name of the sidecar that exported it. */
  service: string;
  span: OtlpSpanJson;
}

export interface Collector {
  url: string;
  spans: ExportedSpan[];
  /** The first span `service` exported for a request to `path`, waited for. */
  spanFor(service: string, path: string): Promise<OtlpSpanJson>;
  stop(): void;
}

/** An OTLP/HTTP JSON receiver on loopback; `check` sees each export request first. */
export function otlpCollector(check?: (req: Request) => void): Collector {
  const spans: ExportedSpan[] = [];
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    async fetch(req) {
      check?.(req);
      const body = (await req.json()) as { resourceSpans: { resource: { attributes: { key: string; value: { stringValue: string } }[] }; scopeSpans: { spans: OtlpSpanJson[] }[] }[] };
      for (const rs of body.resourceSpans) {
        const service = rs.resource.attributes.find((a) => a.key === "service.name")!.value.stringValue;
        for (const ss of rs.scopeSpans) for (const span of ss.spans) spans.push({ service, span });
      }
      return Response.json({});
    },
  });
  const find = (service: string, path: string) => spans.find((s) => s.service === service && spanAttr(s.span, "url.path") === path)?.span;
  return {
    url: `http://127.0.0.1:${server.port}/v1/traces`,
    spans,
    async spanFor(service, path) {
      if (!(await eventually(() => find(service, path) !== undefined, 5000))) throw new Error(`no span from ${service} for ${path}`);
      return find(service, path)!;
    },
    stop: () => void server.stop(true),
  };
}

/** `--trace-collector` and `--trace-sampling 100` for a sidecar reporting to `collector`. */
export const tracingFlags = (collector: Collector) => ["--trace-collector", collector.url, "--trace-sampling", "100"];

export function spanAttr(span: OtlpSpanJson, key: string): string | undefined {
  const v = span.attributes.find((a) => a.key === key)?.value;
  return v?.stringValue ?? v?.intValue;
}

export interface AccessLogLine {
  direction: string;
  method: string;
  path: string;
  status: number;
  duration_ms: number;
  peer: string;
  /** A gRPC call's status. */
  grpc_status?: string;
  /** Why the proxy answered the request itself, when it did (x-mesh-error). */
  mesh_error?: string;
  /** The limit an overflow reached (x-mesh-overflow). */
  mesh_overflow?: string;
}

export function accessLogLines(file: string): AccessLogLine[] {
  return readFileSync(file, "utf8")
    .split("\n")
    .filter(Boolean)
    .map((l) => JSON.parse(l) as AccessLogLine);
}

/** The first line for a request to `path`, waited for (lines are flushed about every second). */
export async function accessLogLine(file: string, path: string): Promise<AccessLogLine> {
  const find = () => accessLogLines(file).find((l) => l.path === path);
  if (!(await eventually(() => find() !== undefined, 5000))) throw new Error(`no access-log line in ${file} for ${path}`);
  return find()!;
}

/** An AuthorizationPolicy document that denies `paths` on `service`. */
export function denyPaths(service: string, paths: string[], name = "no-admin"): string {
  return `---
apiVersion: mesh.dev/v1alpha1
kind: AuthorizationPolicy
metadata: { name: ${name} }
spec:
  service: ${service}
  action: deny
  rules:
    - to: { paths: [${paths.join(", ")}] }
`;
}
