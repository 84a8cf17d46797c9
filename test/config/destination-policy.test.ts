import { describe, expect, test } from "bun:test";
import { defaultDestinationPolicy } from "../../src/config/kinds/destination-policy";
import { doc, errorsOf, specOf } from "./helpers";

const policy = (spec: string, metadata = "  name: payments") => doc("DestinationPolicy", spec, metadata);

describe("DestinationPolicy", () => {
  test("empty spec: every default, service from metadata", () => {
    expect(specOf(policy("  {}"))).toEqual({
      service: "payments",
      loadBalancer: { type: "least-request", zoneAware: true },
      timeouts: { connect: 5000, request: 15000, perTry: 0, idle: 10000, tcpIdle: 3_600_000, tcpMaxDuration: 0 },
      retries: {
        attempts: 2,
        retryOn: ["connect-failure", "refused", "reset"],
        statusCodes: [502, 503, 504],
        grpcStatuses: [],
        backoff: { base: 25, max: 250 },
        budget: { percent: 20, minPerSecond: 10 },
      },
      circuitBreaker: { maxConnections: 1024, maxPendingRequests: 1024, maxRequests: 1024, maxRetries: 1024 },
      outlierDetection: { consecutiveFailures: 5, baseEjectionTime: 30000, maxEjectionTime: 300000, maxEjectionPercent: 50, interval: 10000 },
      multiplex: true,
    });
    expect(defaultDestinationPolicy("payments")).toEqual(specOf(policy("  {}")) as never);
  });

  test("ring hash on a header or a cookie; partial sections keep their other defaults", () => {
    const spec = specOf(policy("  service: pay\n  loadBalancer: {type: ring-hash, hashOn: {cookie: session}, minRingSize: 64}\n  timeouts: {request: 2s}\n  retries: {attempts: 0}"));
    expect(spec.service).toBe("pay");
    expect(spec.loadBalancer).toEqual({ type: "ring-hash", hashOn: { cookie: "session" }, minRingSize: 64, zoneAware: true });
    expect(spec.timeouts).toEqual({ connect: 5000, request: 2000, perTry: 0, idle: 10000, tcpIdle: 3_600_000, tcpMaxDuration: 0 });
    expect((spec.retries as { attempts: number }).attempts).toBe(0);
  });

  test("balancer options must fit the balancer, and ring hash needs exactly one key", () => {
    expect(errorsOf(policy("  loadBalancer: {type: ring-hash}"))).toEqual(["m.yaml#0 spec.loadBalancer.hashOn: required with type ring-hash"]);
    expect(errorsOf(policy("  loadBalancer: {type: ring-hash, hashOn: {}}"))).toEqual(["m.yaml#0 spec.loadBalancer.hashOn: set exactly one of header or cookie"]);
    expect(errorsOf(policy("  loadBalancer: {type: ring-hash, hashOn: {header: x-user, cookie: s}}"))).toEqual([
      "m.yaml#0 spec.loadBalancer.hashOn: set exactly one of header or cookie",
    ]);
    expect(errorsOf(policy('  loadBalancer: {type: ring-hash, hashOn: {header: "bad header"}}'))).toEqual([
      "m.yaml#0 spec.loadBalancer.hashOn.header: expected an HTTP header name",
    ]);
    expect(errorsOf(policy("  loadBalancer: {type: round-robin, hashOn: {header: x}, ewmaDecay: 5s}"))).toEqual([
      "m.yaml#0 spec.loadBalancer.hashOn: only with type ring-hash",
      "m.yaml#0 spec.loadBalancer.ewmaDecay: only with type ewma",
    ]);
    expect(errorsOf(policy("  loadBalancer: {type: random}"))[0]).toContain("spec.loadBalancer.type");
  });

  test("durations, counts and ranges are checked with the field named", () => {
    expect(errorsOf(policy("  timeouts: {connect: 5}\n  retries: {attempts: -1, statusCodes: [404], backoff: {base: 1s, max: 10ms}}"))).toEqual([
      "m.yaml#0 spec.timeouts.connect: duration 5 has no unit: use ms, s, m or h, like \"250ms\", \"30s\", \"5m\" or \"1h30m\"",
      "m.yaml#0 spec.retries.attempts: expected integer ≥ 0",
      "m.yaml#0 spec.retries.statusCodes[0]: expected integer ≥ 500",
      "m.yaml#0 spec.retries.backoff.max: must be at least base",
    ]);
    expect(errorsOf(policy("  outlierDetection: {baseEjectionTime: 1m, maxEjectionTime: 10s, maxEjectionPercent: 150}"))).toEqual([
      "m.yaml#0 spec.outlierDetection.maxEjectionPercent: expected number ≤ 100",
      "m.yaml#0 spec.outlierDetection.maxEjectionTime: must be at least baseEjectionTime",
    ]);
    // setTimeout fires a delay past 2^31 − 1 ms at once: a 1000h request timeout would time out every request.
    expect(errorsOf(policy("  timeouts: {request: 1000h, tcpMaxDuration: 596h}\n  outlierDetection: {maxEjectionTime: 700h}"))).toEqual([
      "m.yaml#0 spec.timeouts.request: 1000h is longer than 596h (about 24.8 days), the longest timer the runtime keeps",
      "m.yaml#0 spec.outlierDetection.maxEjectionTime: 700h is longer than 596h (about 24.8 days), the longest timer the runtime keeps",
    ]);
    expect(errorsOf(policy("  retries: {grpcStatuses: [unavailable, permission-denied]}"))).toEqual([
      "m.yaml#0 spec.retries.grpcStatuses[1]: expected one of cancelled, deadline-exceeded, internal, resource-exhausted, unavailable",
    ]);
    expect(specOf(policy("  retries: {grpcStatuses: [unavailable, cancelled]}")).retries).toMatchObject({ grpcStatuses: ["unavailable", "cancelled"] });
    expect(errorsOf(policy("  circuitBreaker: {maxRequests: 1.5, maxConection: 3}"))).toEqual([
      "m.yaml#0 spec.circuitBreaker.maxRequests: expected integer, got number",
      'm.yaml#0 spec.circuitBreaker: unknown field "maxConection" (did you mean "maxConnections"?)',
    ]);
  });
});
