/**
 * The store's health for /v1/status and `mesh check`: etcd's alarms (a full etcd refuses
 * every write while reads and watches go on, so the replica looks fine otherwise) and the
 * last store error any part of the replica met, with when.
 */
import { errorMessage } from "../core/errors.ts";
import type { AlarmCheck } from "../store/etcd-health.ts";
import { StoreError } from "../store/errors.ts";

/** A store error this recent makes the store unhealthy, and `mesh check` fail. */
export const RECENT_STORE_ERROR_MS = 5 * 60_000;

export interface StoreHealth {
  /** No alarm raised, the alarms readable, and no store error in the last RECENT_STORE_ERROR_MS. */
  healthy: boolean;
  /** etcd only: the cluster's alarms (e.g. "NOSPACE") as last read, when, or why they could not be read. */
  alarms?: string[];
  alarmsCheckedAt?: string;
  alarmCheckError?: string;
  /** The last failure a caller of the store met: its StoreError code (or the error's own), message, time and age. */
  lastError?: { code: string; message: string; at: string; ageMs: number };
}

/** Where alarms come from (store/etcd-health.ts): `check` reads unless recently read; `current` never waits. */
export interface AlarmSource {
  check(): Promise<AlarmCheck>;
  readonly current: AlarmCheck | undefined;
}

export class StoreHealthMonitor {
  private lastError: { code: string; message: string; atMs: number } | undefined;

  constructor(
    private readonly alarms?: AlarmSource,
    private readonly now: () => number = Date.now,
  ) {}

  record(err: unknown): void {
    this.lastError = { code: codeOf(err), message: errorMessage(err), atMs: this.now() };
  }

  /** Brings the alarms up to date (cached; bounded by the check's timeout). */
  async refresh(): Promise<void> {
    await this.alarms?.check();
  }

  report(): StoreHealth {
    const now = this.now();
    const e = this.lastError;
    const lastError = e && { code: e.code, message: e.message, at: new Date(e.atMs).toISOString(), ageMs: now - e.atMs };
    const recentError = lastError !== undefined && lastError.ageMs < RECENT_STORE_ERROR_MS;
    if (!this.alarms) return { healthy: !recentError, ...(lastError && { lastError }) };
    const check = this.alarms.current;
    const alarmsOk = check !== undefined && check.error === undefined && check.alarms.length === 0;
    return {
      healthy: alarmsOk && !recentError,
      alarms: check?.alarms ?? [],
      ...(check && { alarmsCheckedAt: new Date(check.checkedAt).toISOString() }),
      ...(check?.error !== undefined && { alarmCheckError: check.error }),
      ...(lastError && { lastError }),
    };
  }
}

/** The StoreError code, or the error's own (bun:sqlite's SQLITE_FULL, SQLITE_IOERR…). */
function codeOf(err: unknown): string {
  if (err instanceof StoreError) return err.code;
  const code = (err as { code?: unknown } | undefined)?.code;
  return typeof code === "string" ? code : err instanceof Error ? err.name : "error";
}
