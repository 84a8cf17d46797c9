/**
 * Tracing: traceparent read strictly; through a real pair, the span each sidecar hands on
 * is read by OpenTelemetry's own W3C propagator in the service, spans nest caller → callee
 * at the collector (a loopback OTLP/HTTP receiver), a sampled flag from the client is
 * followed and an unsampled one exports nothing, and the query is never recorded.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { context, propagation, ROOT_CONTEXT, trace, TraceFlags, type TextMapGetter } from "@opentelemetry/api";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { parseTraceParent, traceParentOf } from "../../src/proxy/tracing/trace-context.ts";
import { mesh } from "../helpers/cli.ts";
import { eventually } from "../helpers/wait.ts";
import { fixtureFor, metricValue } from "../helpers/mesh-fixture.ts";
import { otlpCollector, spanAttr, tracingFlags, type Collector, type ExportedSpan } from "../helpers/observability.ts";

describe("traceparent", () => {
  const id = "4bf92f3577b34da6a3ce929d0e0e4736";
  test("version 00 with four fields; sampled from the flags", () => {
    expect(parseTraceParent(`00-${id}-00f067aa0ba902b7-01`)).toEqual({ traceId: id, parentId: "00f067aa0ba902b7", sampled: true });
    expect(parseTraceParent(`00-${id}-00f067aa0ba902b7-00`)?.sampled).toBe(false);
    expect(parseTraceParent(`00-${id}-00f067aa0ba902b7-09`)?.sampled).toBe(true);
    // A later version may carry more fields; they are not read.
    expect(parseTraceParent(`01-${id}-00f067aa0ba902b7-01-extra`)?.traceId).toBe(id);
  });

  test.each([
    ["ff version", `ff-${id}-00f067aa0ba902b7-01`],
    ["extra field on 00", `00-${id}-00f067aa0ba902b7-01-x`],
    ["all-zero trace id", `00-${"0".repeat(32)}-00f067aa0ba902b7-01`],
    ["all-zero parent id", `00-${id}-${"0".repeat(16)}-01`],
    ["upper case", `00-${id.toUpperCase()}-00f067aa0ba902b7-01`],
    ["short trace id", `00-${id.slice(2)}-00f067aa0ba902b7-01`],
    ["padding", ` 00-${id}-00f067aa0ba902b7-01`],
  ])("%s is not a traceparent", (_why, value) => {
    expect(parseTraceParent(value)).toBeUndefined();
  });

  test("a repeated traceparent is none", () => {
    const v = `00-${id}-00f067aa0ba902b7-01`;
    expect(traceParentOf(["traceparent", v])?.traceId).toBe(id);
    expect(traceParentOf(["traceparent", v, "traceparent", v])).toBeUndefined();
  });
});

describe("through a real pair", () => {
  const fx = fixtureFor("orders", "payments");
  const propagator = new W3CTraceContextPropagator();
  const getter: TextMapGetter<Headers> = { keys: (h) => [...h.keys()], get: (h, k) => h.get(k) ?? undefined };
  /** What the service saw, as OpenTelemetry's propagator reads it. */
  const seen: { traceId: string; spanId: string; sampled: boolean; raw: string | null }[] = [];
  let collector: Collector;
  let exported: ExportedSpan[];
  let outbound: number;
  let admins: number[];

  beforeAll(async () => {
    collector = otlpCollector((req) => {
      expect(new URL(req.url).pathname).toBe("/v1/traces");
      expect(req.headers.get("content-type")).toBe("application/json");
    });
    exported = collector.spans;
    const service = fx.service((req) => {
      const ctx = propagator.extract(ROOT_CONTEXT, req.headers, getter);
      const sc = trace.getSpanContext(ctx);
      seen.push({ traceId: sc?.traceId ?? "", spanId: sc?.spanId ?? "", sampled: ((sc?.traceFlags ?? 0) & TraceFlags.SAMPLED) === 1, raw: req.headers.get("traceparent") });
      return new Response("ok");
    });
    const tracing = tracingFlags(collector);
    const payments = await fx.proxy("payments", service.url, undefined, tracing);
    const orders = await fx.proxy("orders", fx.echo("orders").url, fx.config("orders", { payments: [payments.ports.inbound] }), tracing);
    outbound = orders.ports.outbound;
    admins = [orders.ports.admin, payments.ports.admin];
  });
  afterAll(() => collector.stop());

  const spansOf = async (traceId: string, count: number) => {
    expect(await eventually(() => exported.filter((e) => e.span.traceId === traceId).length >= count, 5000)).toBe(true);
    return exported.filter((e) => e.span.traceId === traceId);
  };
  const attr = spanAttr;

  test("a request with no traceparent starts a trace: outbound CLIENT span, inbound SERVER span its child, the service continuing from the latter", async () => {
    const res = await fetch(`http://127.0.0.1:${outbound}/v1/charges?card=4111111111111111`, { headers: { host: "payments" } });
    expect(res.status).toBe(200);
    await res.arrayBuffer();
    const got = seen.at(-1)!;
    expect(got.traceId).toMatch(/^[0-9a-f]{32}$/);
    expect(got.sampled).toBe(true);
    const spans = await spansOf(got.traceId, 2);
    const client = spans.find((s) => s.span.kind === 3)!;
    const server = spans.find((s) => s.span.kind === 2)!;
    expect(client.service).toBe("orders");
    expect(server.service).toBe("payments");
    expect(client.span.parentSpanId).toBeUndefined();
    expect(server.span.parentSpanId).toBe(client.span.spanId);
    expect(got.spanId).toBe(server.span.spanId);
    expect(server.span.name).toBe("GET");
    expect(attr(server.span, "url.path")).toBe("/v1/charges");
    expect(attr(server.span, "http.response.status_code")).toBe("200");
    expect(attr(server.span, "mesh.caller")).toBe("spiffe://mesh.local/ns/default/sa/orders");
    expect(attr(client.span, "mesh.destination")).toBe("payments");
    expect(JSON.stringify(spans)).not.toContain("4111111111111111");
    expect(BigInt(server.span.endTimeUnixNano)).toBeGreaterThanOrEqual(BigInt(server.span.startTimeUnixNano));
    expect(BigInt(server.span.startTimeUnixNano)).toBeGreaterThanOrEqual(BigInt(client.span.startTimeUnixNano));
  });

  test("a sampled traceparent from the client (written by OpenTelemetry's propagator) is continued", async () => {
    const parent = trace.setSpanContext(context.active(), { traceId: "0af7651916cd43dd8448eb211c80319c", spanId: "b7ad6b7169203331", traceFlags: TraceFlags.SAMPLED });
    const carrier: Record<string, string> = {};
    propagation.setGlobalPropagator(propagator);
    propagation.inject(parent, carrier);
    const res = await fetch(`http://127.0.0.1:${outbound}/x`, { headers: { host: "payments", ...carrier } });
    await res.arrayBuffer();
    const spans = await spansOf("0af7651916cd43dd8448eb211c80319c", 2);
    const client = spans.find((s) => s.span.kind === 3)!;
    expect(client.span.parentSpanId).toBe("b7ad6b7169203331");
    expect(seen.at(-1)!.traceId).toBe("0af7651916cd43dd8448eb211c80319c");
  });

  test("an unsampled traceparent is carried on, unsampled, and nothing is exported", async () => {
    const traceId = "1af7651916cd43dd8448eb211c80319c";
    const res = await fetch(`http://127.0.0.1:${outbound}/y`, { headers: { host: "payments", traceparent: `00-${traceId}-b7ad6b7169203331-00` } });
    await res.arrayBuffer();
    const got = seen.at(-1)!;
    expect(got.traceId).toBe(traceId);
    expect(got.sampled).toBe(false);
    expect(got.spanId).not.toBe("b7ad6b7169203331");
    // A later sampled request's spans arrive; this trace's never do.
    await (await fetch(`http://127.0.0.1:${outbound}/z`, { headers: { host: "payments" } })).arrayBuffer();
    await spansOf(seen.at(-1)!.traceId, 2);
    expect(exported.filter((e) => e.span.traceId === traceId)).toEqual([]);
    expect(await metricValue(admins[1]!, "mesh_trace_spans_exported_total")).toBeGreaterThanOrEqual(3);
  });

  test("a traceparent the client repeated or garbled starts a new trace", async () => {
    const res = await fetch(`http://127.0.0.1:${outbound}/w`, { headers: { host: "payments", traceparent: "00-xyz-b7ad6b7169203331-01" } });
    await res.arrayBuffer();
    expect(seen.at(-1)!.raw).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
  });
});

describe("flags", () => {
  test("bad tracing flags are refused naming the flag", async () => {
    const base = ["proxy", "--service", "orders", "--upstream", "http://127.0.0.1:8080"];
    const noCollector = await mesh(...base, "--trace-sampling", "5");
    expect(noCollector.code).toBe(64);
    expect(noCollector.err).toContain("--trace-sampling: needs --trace-collector");
    const badUrl = await mesh(...base, "--trace-collector", "udp://x:1");
    expect(badUrl.err).toContain("--trace-collector: expected an http:// or https:// URL");
    const badRate = await mesh(...base, "--trace-collector", "http://127.0.0.1:4318/v1/traces", "--trace-sampling", "150");
    expect(badRate.err).toContain('--trace-sampling: expected a percentage from 0 to 100, got "150"');
  });
});
