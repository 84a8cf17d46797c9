/** The demo's text output: the live tables, and where to look next. */
import type { InstanceRow, RouteRow } from "./stats.ts";
import type { TrafficStats } from "./traffic.ts";

const dash = "–";
export const pct = (v: number | undefined) => (v === undefined ? dash : `${(v * 100).toFixed(1)}%`);
export const ms = (v: number | undefined) => (v === undefined ? dash : v < 9.95 ? `${v.toFixed(1)}ms` : `${Math.round(v)}ms`);
const rate = (v: number) => v.toFixed(1);

export function duration(msTotal: number): string {
  const s = Math.round(msTotal / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  return m < 60 ? `${m}m${String(s % 60).padStart(2, "0")}s` : `${Math.floor(m / 60)}h${String(m % 60).padStart(2, "0")}m`;
}

/** Columns of text (those in `left`) left-aligned, numbers right-aligned. */
function table(rows: string[][], left: number[]): string[] {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  return rows.map((r) => "  " + r.map((cell, i) => (left.includes(i) ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join("  ").trimEnd());
}

export interface LiveView {
  elapsedMs: number;
  remainingMs: number;
  offeredRps: number;
  instances: InstanceRow[];
  routes: RouteRow[];
  traffic: TrafficStats;
}

export function liveLines(v: LiveView): string[] {
  const callers = (r: InstanceRow) => Object.keys(r.callers).sort().join(", ") || dash;
  const instances = table(
    [
      ["INSTANCE", "LANG", "REQ/S", "SUCCESS", "P50", "P99", "CALLERS (verified by mTLS)"],
      ...v.instances.map((r) => [r.instance + (r.note ? ` (${r.note})` : ""), r.lang, rate(r.rps), pct(r.success), ms(r.p50), ms(r.p99), callers(r)]),
    ],
    [0, 1, 6],
  );
  const routes = table(
    [
      ["CALLER → SERVICE", "REQ/S", "SUCCESS", "P50", "P99", "RETRIES", "EJECTIONS"],
      ...v.routes.map((r) => [`${r.caller} → ${r.service}`, rate(r.rps), pct(r.success), ms(r.p50), ms(r.p99), String(r.retries), String(r.ejections)]),
    ],
    [0],
  );
  const t = v.traffic;
  return [
    `mesh demo  ${duration(v.elapsedMs)} running, ${duration(v.remainingMs)} left  ·  loadgen: ${v.offeredRps} req/s offered, ${trafficText(t)}`,
    "",
    "Each instance, as its own sidecar sees it (inbound, last 5 s):",
    ...instances,
    "",
    "Each call, as the caller's sidecar sees it (outbound, after retries; retries and ejections since the start):",
    ...routes,
    "",
    t.lastError && t.failed ? `last failure seen by loadgen: ${t.lastError}` : "Ctrl-C stops every process and removes the temporary directory.",
  ];
}

export function trafficText(t: TrafficStats): string {
  const extra = [t.dropped ? `${t.dropped} dropped` : "", t.cancelled ? `${t.cancelled} cut off at stop` : ""].filter(Boolean);
  return `${t.sent} sent, ${t.ok} ok, ${t.failed} failed${extra.length ? `, ${extra.join(", ")}` : ""}`;
}

export interface LookNext {
  mesh: string;
  adminUrl: string;
  adminTokenFile: string;
  tempDir: string;
  sidecars: { instance: string; adminPort: number }[];
}

export function lookNextLines(n: LookNext): string[] {
  const cmds: [string, string][] = [
    [`${n.mesh} check`, "control plane, CA, every proxy on the latest config"],
    // Manifests only: the endpoints a sidecar was sent are in its /config_dump, below.
    [`${n.mesh} get service`, "the Services the demo applied, as stored manifests"],
    [`${n.mesh} get destinationpolicy pricing`, "the retries and outlier detection callers apply to pricing"],
    ...n.sidecars.map((s): [string, string] => [`curl -s http://127.0.0.1:${s.adminPort}/metrics`, `${s.instance}'s sidecar (also /config_dump)`]),
  ];
  const width = Math.max(...cmds.map(([c]) => c.length));
  return [
    "Where to look next, in another terminal while this runs:",
    `  export MESH_ADMIN_URL=${n.adminUrl} MESH_ADMIN_TOKEN="$(cat ${n.adminTokenFile})"`,
    ...cmds.map(([c, what]) => `  ${c.padEnd(width)}  ${what}`),
    `  The CA, certificates, join tokens and store are in ${n.tempDir}`,
    "",
  ];
}

/** Redraws a block of lines in place on a terminal. */
export class InPlace {
  private drawn = 0;
  constructor(private readonly write: (text: string) => void, private readonly columns: () => number) {}
  draw(lines: string[]): void {
    // Lines cut to the terminal's width, so each takes one row and moving up by the count is exact.
    const width = Math.max(20, this.columns() - 1);
    const up = this.drawn ? `\x1b[${this.drawn}F` : "";
    this.write(`${up}\x1b[J${lines.map((l) => (l.length > width ? l.slice(0, width - 1) + "…" : l)).join("\n")}\n`);
    this.drawn = lines.length;
  }
}
