/**
 * `mesh check`'s lines on the control plane's store: etcd's alarms and the last store error.
 * A full etcd still serves reads, so without these every other line would pass.
 */
import { RECENT_STORE_ERROR_MS, type StoreHealth } from "../control-plane/store-health.ts";
import { NO_SPACE_REMEDY } from "../store/errors.ts";
import type { ViewSync } from "../control-plane/view.ts";

export interface CheckLine {
  ok: boolean;
  text: string;
  fix?: string;
}

const FIX_ALARM_UNREAD = "check etcd's members ('etcdctl endpoint health --cluster') and this replica's reach to them; it serves reads from its last view meanwhile";
const FIX_CORRUPT = "find the member whose data differs ('etcdctl alarm list', 'etcdctl endpoint hashkv --cluster'), replace it with a fresh member, then 'etcdctl alarm disarm'";
const FIX_UNAVAILABLE = "check etcd's members ('etcdctl endpoint health --cluster') and this replica's reach to them";
const FIX_EMBEDDED = "see the control plane's log; check the data directory's disk (space, permissions)";

/**
 * `store`: the status's store kind ("embedded", "etcd"); `health` and `view` are absent from
 * control planes older than this check.
 */
export function storeLines(store: string, health: StoreHealth | undefined, view?: ViewSync): CheckLine[] {
  if (!health) return [];
  const lines: CheckLine[] = [];
  // A replica whose watch ended serves its last view until a re-list succeeds: changes made through other replicas do not reach its sidecars meanwhile.
  if (view && !view.synced)
    lines.push({
      ok: false,
      text: `this replica's view of the store is stale since ${view.staleSince ?? "a moment ago"} (${[view.failedRelists > 0 ? `${view.failedRelists} re-lists failed` : "", view.error ?? ""].filter((s) => s !== "").join(": ")}); its sidecars get no changes meanwhile`,
      fix: store === "etcd" ? FIX_UNAVAILABLE : FIX_EMBEDDED,
    });
  for (const alarm of health.alarms ?? []) lines.push(alarmLine(alarm));
  if (health.alarmCheckError !== undefined) lines.push({ ok: false, text: `etcd's alarms could not be read: ${health.alarmCheckError}`, fix: FIX_ALARM_UNREAD });
  const e = health.lastError;
  if (e && e.ageMs < RECENT_STORE_ERROR_MS) {
    const fix = e.code === "no-space" ? NO_SPACE_REMEDY : store === "etcd" ? FIX_UNAVAILABLE : FIX_EMBEDDED;
    lines.push({ ok: false, text: `${store} store failed a request ${ago(e.ageMs)} ago (${e.at}): ${e.code}: ${e.message}`, fix });
  }
  if (lines.length === 0) {
    const quiet = `no errors in the last ${RECENT_STORE_ERROR_MS / 60_000} minutes${e ? ` (last at ${e.at})` : ""}`;
    lines.push({ ok: true, text: store === "etcd" ? `etcd store: no alarms, ${quiet}` : `${store} store: ${quiet}` });
  }
  return lines;
}

function alarmLine(alarm: string): CheckLine {
  if (alarm === "NOSPACE")
    return { ok: false, text: "etcd's NOSPACE alarm is raised: etcd is out of space and refuses every write (applies, registrations, join tokens); reads still work", fix: NO_SPACE_REMEDY };
  if (alarm === "CORRUPT") return { ok: false, text: "etcd's CORRUPT alarm is raised: a member's data differs from the others'", fix: FIX_CORRUPT };
  return { ok: false, text: `etcd's ${alarm} alarm is raised`, fix: "see 'etcdctl alarm list' and etcd's log; once resolved, 'etcdctl alarm disarm'" };
}

function ago(ms: number): string {
  return ms < 120_000 ? `${Math.round(ms / 1000)} s` : `${Math.round(ms / 60_000)} min`;
}
