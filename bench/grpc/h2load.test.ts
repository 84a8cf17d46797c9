/** h2load's command line and summary (bench/grpc/h2load.ts), and the gRPC message framing the service checks. */
import { expect, test } from "bun:test";
import { h2loadArgs, parseH2load } from "./h2load.ts";
import { checkOneMessage, grpcMessage } from "./wire.ts";

// As h2load 1.52.0 prints it (Debian bookworm's nghttp2-client), after a run with a warm-up.
const SUMMARY = `starting benchmark...
spawning thread #0: 4 total client(s). Timing-based test with 1s of warm-up time and 5s of main duration for measurements.
Warm-up started for thread #0.
progress: 100% of clients started
Application protocol: h2c
Warm-up phase is over for thread #0.
Main benchmark duration is started for thread #0.
Main benchmark duration is over for thread #0. Stopping all clients.
Stopped all clients for thread #0

finished in 6.00s, 11314.80 req/s, 1.47MB/s
requests: 56574 total, 56574 started, 56574 done, 56570 succeeded, 4 failed, 1 errored, 2 timeout
status codes: 56570 2xx, 0 3xx, 1 4xx, 3 5xx
traffic: 7.38MB (7737616) total, 221.16KB (226464) headers (space savings 95.75%), 6.81MB (7144585) data
                     min         max         mean         sd        +/- sd
time for request:     1.29ms     42.10ms      5.61ms      2.03ms    81.40%
time for connect:        0us         0us         0us         0us     0.00%
time to 1st byte:        0us         0us         0us         0us     0.00%
req/s           :    2828.63     2828.75     2828.70        0.05   100.00%
`;

test("h2load's summary: rate of the measured duration, counts, statuses and request times", () => {
  expect(parseH2load(SUMMARY)).toEqual({
    reqPerSec: 11314.8,
    total: 56574,
    succeeded: 56570,
    failed: 4,
    errored: 1,
    timeout: 2,
    status: { "2xx": 56570, "3xx": 0, "4xx": 1, "5xx": 3 },
    minMs: 1.29,
    maxMs: 42.1,
    meanMs: 5.61,
  });
});

test("request times in microseconds and seconds", () => {
  const r = parseH2load(SUMMARY.replace("1.29ms     42.10ms      5.61ms", "15us      1.50s        75us"));
  expect([r.minMs, r.maxMs, r.meanMs]).toEqual([0.015, 1500, 0.075]);
});

test("output without a summary is an error that shows the output", () => {
  expect(() => parseH2load("connect to 127.0.0.1:1 failed: Connection refused\n")).toThrow(/no result[\s\S]*Connection refused/);
});

test("the command line names the service in :authority and sends a gRPC POST", () => {
  const args = h2loadArgs("h2load", { port: 4000, shape: { connections: 4, streams: 16 }, durationS: 5, warmupS: 1, bodyFile: "/tmp/req.bin" });
  expect(args.join(" ")).toBe(
    "h2load -t 1 -c 4 -m 16 -D 5s --warm-up-time 1s -d /tmp/req.bin -H content-type: application/grpc -H te: trailers -H :authority: payments http://127.0.0.1:4000/bench.Payments/Charge",
  );
});

test("a request body is one uncompressed length-prefixed message, or the reason it is not", () => {
  const message = grpcMessage(100, "y");
  expect(message.byteLength).toBe(105);
  expect(checkOneMessage(message)).toBe(100);
  expect(checkOneMessage(message.subarray(0, 50))).toMatch(/prefix says 100 bytes, body carries 45/);
  expect(checkOneMessage(Buffer.from([1, 0, 0, 0, 0]))).toMatch(/compressed flag 1/);
  expect(checkOneMessage(Buffer.alloc(3))).toMatch(/shorter than a message prefix/);
});
