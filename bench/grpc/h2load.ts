/**
 * h2load (Debian's nghttp2-client) as the gRPC load generator: its command line, and its
 * summary read into numbers. h2load speaks HTTP/2 only; it does not read gRPC statuses,
 * so a call a proxy answered itself with a gRPC error on HTTP 200 counts as a success to
 * it. The runner covers that with the service's own counts and mesh's metrics.
 */
import { AUTHORITY, METHOD_PATH } from "./wire.ts";

/** A load shape: h2load's `-c` connections, each with `-m` streams in flight. */
export interface Shape {
  connections: number;
  streams: number;
}

export const shapeName = (s: Shape) => `${s.connections}x${s.streams}`;

export interface H2loadRun {
  port: number;
  shape: Shape;
  durationS: number;
  warmupS: number;
  /** The request body: one 5-byte-prefixed gRPC message (wire.ts). */
  bodyFile: string;
}

/** Printed by h2load when its warm-up ends and when its measured duration ends: the window its counts cover. */
export const MEASURE_START = "Warm-up phase is over";
export const MEASURE_END = "Main benchmark duration is over";

export function h2loadArgs(h2load: string, run: H2loadRun): string[] {
  return [
    h2load,
    // One thread: the machine has two cores and the proxies under test need them more.
    "-t", "1",
    "-c", String(run.shape.connections),
    "-m", String(run.shape.streams),
    "-D", `${run.durationS}s`,
    "--warm-up-time", `${run.warmupS}s`,
    "-d", run.bodyFile,
    "-H", "content-type: application/grpc",
    "-H", "te: trailers",
    // h2load sends the URL's host:port as :authority unless told otherwise; the sidecar routes by it.
    "-H", `:authority: ${AUTHORITY}`,
    `http://127.0.0.1:${run.port}${METHOD_PATH}`,
  ];
}

export interface H2loadResult {
  /** Completed requests per second of the measured duration (warm-up excluded), as h2load computes it. */
  reqPerSec: number;
  total: number;
  succeeded: number;
  /** Completed with a status that is not 2xx (h2load's "failed"). */
  failed: number;
  /** Streams or connections that broke before a response completed. */
  errored: number;
  timeout: number;
  status: { "2xx": number; "3xx": number; "4xx": number; "5xx": number };
  /** Time for request: from sending its head to the end of its response. */
  minMs: number;
  maxMs: number;
  meanMs: number;
}

const UNIT_MS: Record<string, number> = { us: 0.001, ms: 1, s: 1000 };

function duration(text: string): number {
  const m = /^([\d.]+)(us|ms|s)$/.exec(text);
  if (!m) throw new Error(`h2load: unreadable time "${text}"`);
  return Number(m[1]) * UNIT_MS[m[2]!]!;
}

function match(text: string, re: RegExp, what: string): RegExpExecArray {
  const m = re.exec(text);
  if (!m) throw new Error(`h2load printed no ${what}:\n${text.trimEnd().split("\n").slice(-12).join("\n")}`);
  return m;
}

export function parseH2load(text: string): H2loadResult {
  const finished = match(text, /^finished in [\d.]+\w+, ([\d.]+) req\/s/m, "result");
  const req = match(text, /^requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/m, "request counts");
  const codes = match(text, /^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/m, "status codes");
  // min, max, mean, sd, +/- sd; a run with no completed request prints zeros.
  const times = match(text, /^time for request:\s+(\S+)\s+(\S+)\s+(\S+)/m, "request times");
  return {
    reqPerSec: Number(finished[1]),
    total: Number(req[1]),
    succeeded: Number(req[2]),
    failed: Number(req[3]),
    errored: Number(req[4]),
    timeout: Number(req[5]),
    status: { "2xx": Number(codes[1]), "3xx": Number(codes[2]), "4xx": Number(codes[3]), "5xx": Number(codes[4]) },
    minMs: duration(times[1]!),
    maxMs: duration(times[2]!),
    meanMs: duration(times[3]!),
  };
}
