/**
 * A gRPC call's deadline, as its client sends it in `grpc-timeout` (the gRPC over HTTP/2
 * spec: at most 8 digits and a unit, H M S m u n). The outbound holds the whole call to it,
 * as Envoy does for Istio (grpc_timeout_header_max), so retries never run past the time the
 * client will wait, and tells each retry the time that is left.
 */
import { LONGEST_TIMER_MS } from "../../core/timer-delay.ts";

const UNIT_MS: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 0.001, n: 0.000001 };
const GRPC_TIMEOUT = /^(\d{1,8})([HMSmun])$/;
/** The deadline in milliseconds (at least 1), or undefined when the header is absent, malformed or beyond any timer (about 24 days: none in practice). */
export function grpcTimeoutMs(value: string | string[] | undefined): number | undefined {
  if (typeof value !== "string") return undefined;
  const m = GRPC_TIMEOUT.exec(value);
  if (m === null) return undefined;
  const ms = Number(m[1]) * UNIT_MS[m[2]!]!;
  return ms > LONGEST_TIMER_MS ? undefined : Math.max(1, Math.ceil(ms));
}

/** `ms` as a grpc-timeout value: whole milliseconds, or seconds past what 8 digits of them hold (27 hours). */
export function grpcTimeoutValue(ms: number): string {
  const whole = Math.max(1, Math.ceil(ms));
  return whole <= 99_999_999 ? `${whole}m` : `${Math.ceil(whole / 1000)}S`;
}
