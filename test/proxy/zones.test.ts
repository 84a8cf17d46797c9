import { describe, expect, test } from "bun:test";
import { FakeClock } from "../../src/core/clock.ts";
import { Endpoint } from "../../src/proxy/endpoint.ts";
import { OutlierDetector } from "../../src/proxy/resilience/outlier.ts";
import { zoneCandidates, zoneSplit } from "../../src/proxy/zones.ts";
import { defaultDestinationPolicy } from "../../src/config/kinds/destination-policy.ts";

const endpoint = (i: number, zone?: string) => new Endpoint({ address: `10.0.0.${i}`, port: 8080, weight: 1, ...(zone && { zone }) });
const lb = defaultDestinationPolicy("pay").loadBalancer;

describe("zoneSplit", () => {
  const mixed = [endpoint(1, "a"), endpoint(2, "b"), endpoint(3, "a"), endpoint(4)];

  test("the caller's zone against the rest, endpoints without a zone among the rest", () => {
    const split = zoneSplit(mixed, "a", lb)!;
    expect(split.local.map((e) => e.key)).toEqual(["10.0.0.1:8080", "10.0.0.3:8080"]);
    expect(split.remote.map((e) => e.key)).toEqual(["10.0.0.2:8080", "10.0.0.4:8080"]);
  });

  test("none where zones change nothing", () => {
    expect(zoneSplit(mixed, undefined, lb)).toBeUndefined();
    expect(zoneSplit(mixed, "c", lb)).toBeUndefined();
    expect(zoneSplit([endpoint(1, "a"), endpoint(2, "a")], "a", lb)).toBeUndefined();
    expect(zoneSplit(mixed, "a", { ...lb, zoneAware: false })).toBeUndefined();
    expect(zoneSplit(mixed, "a", { type: "ring-hash", hashOn: { header: "x-user" }, zoneAware: true })).toBeUndefined();
  });
});

describe("zoneCandidates", () => {
  /** Four endpoints in zone a, two in b; one failure ejects, and all may be ejected. */
  function setup() {
    const local = [1, 2, 3, 4].map((i) => endpoint(i, "a"));
    const remote = [5, 6].map((i) => endpoint(i, "b"));
    const outlier = new OutlierDetector(new FakeClock(), { consecutiveFailures: 1, baseEjectionMs: 30_000, maxEjectionMs: 300_000, maxEjectionPercent: 100, decayIntervalMs: 10_000 });
    outlier.setEndpoints([...local, ...remote]);
    const split = zoneSplit([...local, ...remote], "a", lb)!;
    const eject = (...eps: Endpoint[]) => eps.forEach((e) => outlier.onResult(e, false));
    return { local, remote, outlier, split, eject };
  }
  const keys = (eps: readonly Endpoint[]) => eps.map((e) => e.key.split(":")[0]);

  test("a healthy zone keeps all its callers' traffic", () => {
    const { split, outlier } = setup();
    expect(keys(zoneCandidates(split, outlier, () => 0.999))).toEqual(["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]);
  });

  test("at 3 of 4 healthy (1.4 × 75% ≥ 1) still all; at 2 of 4, 70% stays and 30% spills to the other zone", () => {
    const { local, split, outlier, eject } = setup();
    eject(local[0]!);
    expect(keys(zoneCandidates(split, outlier, () => 0.999))).toEqual(["10.0.0.2", "10.0.0.3", "10.0.0.4"]);
    eject(local[1]!);
    expect(keys(zoneCandidates(split, outlier, () => 0.69))).toEqual(["10.0.0.3", "10.0.0.4"]);
    expect(keys(zoneCandidates(split, outlier, () => 0.71))).toEqual(["10.0.0.5", "10.0.0.6"]);
  });

  test("a zone with no healthy endpoint sends everything elsewhere; with none healthy anywhere, nothing is left", () => {
    const { local, remote, split, outlier, eject } = setup();
    eject(...local);
    expect(keys(zoneCandidates(split, outlier, () => 0))).toEqual(["10.0.0.5", "10.0.0.6"]);
    eject(...remote);
    expect(zoneCandidates(split, outlier, () => 0)).toEqual([]);
  });

  test("the other zone all ejected: the zone's own healthy endpoints take the spill", () => {
    const { local, remote, split, outlier, eject } = setup();
    eject(local[0]!, local[1]!, ...remote);
    expect(keys(zoneCandidates(split, outlier, () => 0.99))).toEqual(["10.0.0.3", "10.0.0.4"]);
  });
});
