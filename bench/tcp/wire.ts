/**
 * What the load client (client.ts) and the runner agree on: the message a round trip
 * carries, the bulk stream's bytes, the lines that mark the measured window, and the
 * result the client prints last, as one JSON line.
 */

/** One round trip: the client sends this many bytes and waits for all of them back. */
export const MESSAGE_BYTES = 64;

/**
 * The bulk stream repeats this pattern. Its length is no power of two, so a chunk the
 * proxies lost, repeated or reordered never lines up with the pattern again.
 */
export const PATTERN_BYTES = 1_048_573;

export function pattern(): Buffer {
  const out = Buffer.alloc(PATTERN_BYTES);
  // A cheap generator with a long period: no two nearby chunks look alike.
  let x = 0x9e3779b9;
  for (let i = 0; i < out.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/** Printed by the client on its own line when its warm-up ends and when its measured window ends. */
export const WINDOW_START = "window start";
export const WINDOW_END = "window end";

export interface RoundTripResult {
  kind: "rr";
  connections: number;
  /** Round trips completed in the measured window. */
  roundTrips: number;
  /** The measured window, as the client timed it. */
  windowMs: number;
  perSecond: number;
  /** Time from writing a message to reading the last byte of its echo, µs. */
  p50Us: number;
  p99Us: number;
  maxUs: number;
  /** The client's own CPU time in the window, ms. */
  cpuMs: number;
  /** Connections the client opened (all at the start, kept for the whole run). */
  opened: number;
  errors: number;
  /** The first few errors, for the report. */
  errorSample: string[];
}

export interface BulkResult {
  kind: "bulk";
  /** Bytes each transfer sends one way (and reads back). */
  bytesPerTransfer: number;
  /** Transfers completed in the measured window; each on its own connection. */
  transfers: number;
  /** Bytes sent one way by those transfers. */
  bytes: number;
  /** Sum of the transfers' times, from the first byte written to the last byte of echo read. */
  transferMs: number;
  /** Bytes one way per second of transfer time, in MB (10^6 bytes). */
  mbPerSec: number;
  windowMs: number;
  /** The client's own CPU time in the window, ms. */
  cpuMs: number;
  /** Connections the client opened (every transfer's, warm-up included). */
  opened: number;
  errors: number;
  errorSample: string[];
}

export type ClientResult = RoundTripResult | BulkResult;

/** Errors kept as text for the report; every error is counted. */
export const ERROR_SAMPLE = 5;
