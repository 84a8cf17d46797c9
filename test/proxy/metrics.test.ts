/** The Prometheus registry: cumulative histogram buckets and the recorder's series. */
import { describe, expect, test } from "bun:test";
import { Histogram, proxyMetrics, RequestRecorder } from "../../src/proxy/metrics.ts";

describe("histogram", () => {
  test("buckets render cumulative; +Inf, sum and count include values past the last bucket", () => {
    const h = new Histogram("lat", "help", [1, 5, 10]);
    for (const v of [0.5, 1, 3, 7, 50]) h.observe({ direction: "inbound" }, v);
    expect(h.render()).toEqual([
      'lat_bucket{direction="inbound",le="1"} 2',
      'lat_bucket{direction="inbound",le="5"} 3',
      'lat_bucket{direction="inbound",le="10"} 4',
      'lat_bucket{direction="inbound",le="+Inf"} 5',
      'lat_sum{direction="inbound"} 61.5',
      'lat_count{direction="inbound"} 5',
    ]);
  });

  test("a label value is escaped in the text, and series with the same labels are one", () => {
    const h = new Histogram("lat", "help", [1]);
    h.observe({ peer: 'a"b' }, 0.1);
    h.of({ peer: 'a"b' }).observe(2);
    expect(h.render()).toContain('lat_count{peer="a\\"b"} 2');
  });
});

describe("request recorder", () => {
  test("counts by peer and status class, latency by peer (outbound) or direction only (inbound)", () => {
    const m = proxyMetrics();
    const out = new RequestRecorder(m, "outbound", true);
    const inb = new RequestRecorder(m, "inbound", false);
    out.record("payments", 200, 3);
    out.record("payments", 204, 3);
    out.record("payments", 503, 3);
    inb.record("orders", 200, 1);
    inb.record("catalog", 200, 1);
    expect(m.requests.get({ direction: "outbound", peer: "payments", status: "2xx" })).toBe(2);
    expect(m.requests.get({ direction: "outbound", peer: "payments", status: "5xx" })).toBe(1);
    expect(m.requests.get({ direction: "inbound", peer: "catalog", status: "2xx" })).toBe(1);
    const text = m.registry.render();
    expect(text).toContain('mesh_request_duration_ms_count{direction="outbound",peer="payments"} 3');
    expect(text).toContain('mesh_request_duration_ms_count{direction="inbound"} 2');
  });
});
