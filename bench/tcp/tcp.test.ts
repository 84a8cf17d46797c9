/** The pure parts of `npm run bench:tcp`: round-trip percentiles from the histogram, and its flags. */
import { expect, test } from "bun:test";
import { percentile } from "../stats.ts";
import { parseOptions } from "./args.ts";
import { Histogram } from "./histogram.ts";
import { loadName } from "./load.ts";

test("percentiles from the histogram are the nearest-rank percentiles of the samples, to the microsecond", () => {
  const h = new Histogram();
  const samples = Array.from({ length: 1000 }, (_, i) => 20 + ((i * 7919) % 500) + 0.3);
  for (const s of samples) h.record(s);
  const sorted = samples.map(Math.round).sort((a, b) => a - b);
  for (const p of [1, 50, 90, 99, 100]) expect(h.percentile(p)).toBe(percentile(sorted, p));
  expect(h.count).toBe(1000);
  expect(h.maxUs).toBeCloseTo(519.3, 5);
});

test("a round trip past the histogram's range counts as its maximum; an empty histogram has no percentile", () => {
  const h = new Histogram();
  expect(h.percentile(50)).toBeNaN();
  h.record(10);
  h.record(5_000_000);
  expect(h.percentile(50)).toBe(10);
  expect(h.percentile(99)).toBe(5_000_000);
  h.reset();
  expect(h.count).toBe(0);
  expect(h.percentile(99)).toBeNaN();
});

test("defaults: 3 rounds of 5 s, round trips at 1 and 16 connections, then 64 MiB bulk transfers", () => {
  const o = parseOptions([]);
  if (o === "help") throw new Error("help");
  expect([o.rounds, o.durationS, o.warmupS, o.primeS]).toEqual([3, 5, 1, 5]);
  expect(o.loads.map(loadName)).toEqual(["rr c1", "rr c16", "bulk 64 MiB"]);
  expect(o.only).toEqual(["direct", "mesh-pair", "haproxy-pair"]);
});

test("--quick: one round of 1 s, no warm-up or priming; --bulk-mib 0 leaves bulk out; --only keeps the fixed order", () => {
  const o = parseOptions(["--quick", "--bulk-mib", "0", "--only", "haproxy-pair,direct"]);
  if (o === "help") throw new Error("help");
  expect([o.rounds, o.durationS, o.warmupS, o.primeS]).toEqual([1, 1, 0, 0]);
  expect(o.loads.map(loadName)).toEqual(["rr c1", "rr c16"]);
  expect(o.only).toEqual(["direct", "haproxy-pair"]);
});

test("bad flags are refused with the reason", () => {
  expect(() => parseOptions(["--bulk-mib", "4096"])).toThrow(/at most 1024/);
  expect(() => parseOptions(["--connections", "1,0"])).toThrow(/--connections/);
  expect(() => parseOptions(["--only", "nginx-pair"])).toThrow(/unknown topology/);
  expect(() => parseOptions(["--nope"])).toThrow();
  expect(parseOptions(["--help"])).toBe("help");
});
