/**
 * How long a workload certificate and a registration may live: one set of bounds for the
 * CA, the control plane's flags and its config file's schema, which imports no x509 code.
 */
export const DEFAULT_LEAF_TTL_MS = 24 * 3600_000;
/** Workload certificates are short-lived by design; a longer request is refused. */
export const MAX_LEAF_TTL_MS = 30 * 24 * 3600_000;
/**
 * A certificate's notAfter is kept in whole seconds, so a shorter lifetime may be rounded
 * down to end before it is written (`mesh ca issue` and `mesh ca sign --ttl`).
 */
export const MIN_LEAF_TTL_MS = 1_000;
/**
 * Sidecars renew at half life, and a renewal waits at least a second (timerDelay's floor):
 * a shorter certificate would lapse before its renewal is due.
 */
const MIN_CERT_TTL_MS = 2_000;
/** etcd grants leases in whole seconds, and sidecars heartbeat at a third of the TTL. */
const MIN_LEASE_TTL_MS = 1_000;

/** Why the control plane cannot sign workload certificates for `ms`, if it cannot. */
export function certTtlProblem(ms: number): string | undefined {
  if (ms > MAX_LEAF_TTL_MS) return `TTL exceeds the maximum of ${MAX_LEAF_TTL_MS / 3600_000}h, the longest a workload certificate is signed for`;
  if (ms < MIN_CERT_TTL_MS) return `TTL is below the minimum of ${MIN_CERT_TTL_MS / 1000}s: sidecars renew at half life, and no renewal comes sooner than a second`;
  return undefined;
}

/** Why a registration cannot outlive its last heartbeat by `ms`, if it cannot. */
export function leaseTtlProblem(ms: number): string | undefined {
  if (ms < MIN_LEASE_TTL_MS) return `TTL is below the minimum of ${MIN_LEASE_TTL_MS / 1000}s: etcd grants leases in whole seconds, and sidecars heartbeat at a third of it`;
  return undefined;
}
