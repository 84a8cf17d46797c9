/**
 * W3C Trace Context's `traceparent` (https://www.w3.org/TR/trace-context/): read strictly,
 * written in version 00. A value that does not parse starts a new trace, as the
 * specification asks, rather than being repaired.
 */
export interface TraceParent {
  traceId: string;
  /** The caller's span. */
  parentId: string;
  sampled: boolean;
}

const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;
const ZERO_TRACE = "0".repeat(32);
const ZERO_SPAN = "0".repeat(16);

/** The traceparent of a request's fields ([name, value, ...]); undefined when absent, repeated or invalid. */
export function traceParentOf(fields: readonly string[]): TraceParent | undefined {
  let value: string | undefined;
  for (let i = 0; i < fields.length; i += 2) {
    if (fields[i] !== "traceparent") continue;
    if (value !== undefined) return undefined;
    value = fields[i + 1];
  }
  return value === undefined ? undefined : parseTraceParent(value);
}

export function parseTraceParent(value: string): TraceParent | undefined {
  const m = TRACEPARENT.exec(value);
  if (m === null) return undefined;
  const [, version, traceId, parentId, flags, rest] = m as unknown as [string, string, string, string, string, string | undefined];
  // ff is forbidden; version 00 has exactly four fields; a later version may add some.
  if (version === "ff" || (version === "00" && rest !== undefined)) return undefined;
  if (traceId === ZERO_TRACE || parentId === ZERO_SPAN) return undefined;
  return { traceId, parentId, sampled: (parseInt(flags, 16) & 1) === 1 };
}

export function formatTraceParent(traceId: string, spanId: string, sampled: boolean): string {
  return `00-${traceId}-${spanId}-${sampled ? "01" : "00"}`;
}

/** Random bytes come from a pool refilled 4 KiB at a time: one getRandomValues call per ~170 spans. */
const pool = Buffer.allocUnsafe(4096);
let used = pool.length;

function randomHex(bytes: number, zero: string): string {
  for (;;) {
    if (used + bytes > pool.length) {
      crypto.getRandomValues(pool);
      used = 0;
    }
    const out = pool.toString("hex", used, used + bytes);
    used += bytes;
    if (out !== zero) return out; // an all-zero id is invalid
  }
}

export const newTraceId = (): string => randomHex(16, ZERO_TRACE);
export const newSpanId = (): string => randomHex(8, ZERO_SPAN);
