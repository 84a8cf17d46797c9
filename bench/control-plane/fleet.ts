/** All simulators together: aggregate status, waiting for every proxy's ack, collecting times. */
import { isClosing } from "../procs.ts";
import type { ControlPlane } from "./cp-process.ts";
import type { SimErrors, SimStatus, VersionTime } from "./sim-protocol.ts";
import type { Simulator } from "./sim-handle.ts";

export interface FleetStatus extends SimStatus {
  /** The single version every proxy last acked, if there is one. */
  agreed?: string;
}

export async function fleetStatus(sims: Simulator[], since: number): Promise<FleetStatus> {
  const all = await Promise.all(sims.map((s) => s.status(since)));
  const versions: Record<string, number> = {};
  const errors: SimErrors = { register: 0, heartbeat: 0, poll: 0, ack: 0, messages: {} };
  for (const s of all) {
    for (const [v, n] of Object.entries(s.versions)) versions[v] = (versions[v] ?? 0) + n;
    for (const k of ["register", "heartbeat", "poll", "ack"] as const) errors[k] += s.errors[k];
    for (const [m, n] of Object.entries(s.errors.messages)) errors.messages[m] = (errors.messages[m] ?? 0) + n;
  }
  const proxies = all.reduce((a, s) => a + s.proxies, 0);
  const keys = Object.keys(versions);
  const agreed = keys.length === 1 && versions[keys[0]!] === proxies ? keys[0] : undefined;
  return { proxies, registered: all.reduce((a, s) => a + s.registered, 0), ackedSince: all.reduce((a, s) => a + s.ackedSince, 0), versions, errors, agreed };
}

export const errorCount = (e: SimErrors) => e.register + e.heartbeat + e.poll + e.ack;

/** One line: acks since t0, how many versions the proxies are spread over, errors by kind. */
export function describe(s: FleetStatus): string {
  const versions = Object.entries(s.versions).sort((a, b) => b[1] - a[1]);
  const top = versions.slice(0, 3).map(([v, n]) => `${v}×${n}`).join(", ");
  const e = s.errors;
  return `${s.ackedSince}/${s.proxies} acked since t0, ${s.registered} registered; on ${versions.length} versions (${top}${versions.length > 3 ? ", …" : ""}); errors register ${e.register}, heartbeat ${e.heartbeat}, poll ${e.poll}, ack ${e.ack}`;
}

export function topMessages(e: SimErrors, n = 6): string[] {
  return Object.entries(e.messages).sort((a, b) => b[1] - a[1]).slice(0, n).map(([m, c]) => `${c}× ${m}`);
}

/**
 * Waits until every proxy acked one and the same version at or after `since`; calls
 * `progress` every 5 s; throws with the state on timeout.
 */
export async function waitAllAcked(sims: Simulator[], since: number, timeoutMs: number, progress?: (s: FleetStatus) => void): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  let last: FleetStatus | undefined;
  let nextReport = Date.now() + 5000;
  while (Date.now() < deadline) {
    if (isClosing()) throw new Error("interrupted");
    last = await fleetStatus(sims, since);
    if (last.agreed && last.ackedSince === last.proxies) return last.agreed;
    if (progress && Date.now() >= nextReport) {
      progress(last);
      nextReport += 5000;
    }
    await Bun.sleep(50);
  }
  const messages = last ? topMessages(last.errors).map((m) => `\n    ${m}`).join("") : "";
  throw new Error(`not every proxy acked within ${timeoutMs} ms: ${last ? describe(last) : "no status"}${messages}`);
}

/**
 * The control plane's own view: GET /v1/proxies until it lists `n` proxies, each with
 * `acked` equal to `latest` (and to `version`, when given). Returns how long the last call took.
 */
export async function confirmOnControlPlane(cp: ControlPlane, n: number, version: string | undefined, timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  let state = "";
  while (Date.now() < deadline) {
    if (isClosing()) throw new Error("interrupted");
    const t = performance.now();
    const items = await cp.proxies();
    const took = performance.now() - t;
    const behind = items.filter((p) => p.acked !== p.latest || (version !== undefined && p.latest !== version)).length;
    if (items.length === n && behind === 0) return took;
    state = `${items.length} listed, ${behind} not on latest${version ? ` ${version}` : ""}`;
    await Bun.sleep(500);
  }
  throw new Error(`GET /v1/proxies never showed all ${n} proxies on the latest version within ${timeoutMs} ms: ${state}`);
}

export async function collectTimes(sims: Simulator[], version: string): Promise<{ items: VersionTime[]; missing: number }> {
  const all = await Promise.all(sims.map((s) => s.times(version)));
  return { items: all.flatMap((t) => t.items), missing: all.reduce((a, t) => a + t.missing, 0) };
}
