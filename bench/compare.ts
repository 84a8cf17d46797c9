/**
 * Ratios (every proxied topology to direct; mesh to nginx and haproxy of the same shape)
 * and the performance targets of the data-plane issues, measured and never asserted:
 * on a shared two-core machine a timing assertion would only measure the neighbours.
 */
import { maxPrivateMb, maxRssMb, type Summary } from "./results.ts";

export interface Ratio {
  subject: string;
  reference: string;
  /** connections → subject / reference */
  reqPerSec: Record<number, number>;
  p50: Record<number, number>;
  p99: Record<number, number>;
  /** Largest per-proxy peak RSS, subject / reference; peers only. */
  rss?: number;
  /** CPU per 1k requests of all proxies, subject / reference; peers only. */
  cpuPer1k?: number;
}

export interface Target {
  name: string;
  goal: string;
  measured: string;
  /** undefined: could not be measured in this run (a row was skipped or failed). */
  met: boolean | undefined;
}

const ok = (s: Summary | undefined): s is Summary => s?.status === "ok";

function ratio(subject: Summary, reference: Summary, peer: boolean): Ratio {
  const r: Ratio = { subject: subject.id, reference: reference.id, reqPerSec: {}, p50: {}, p99: {} };
  for (const l of subject.levels) {
    const ref = reference.levels.find((x) => x.connections === l.connections);
    if (!ref) continue;
    r.reqPerSec[l.connections] = l.reqPerSec / ref.reqPerSec;
    r.p50[l.connections] = l.p50Ms / ref.p50Ms;
    r.p99[l.connections] = l.p99Ms / ref.p99Ms;
  }
  if (peer) {
    r.rss = maxRssMb(subject) / maxRssMb(reference);
    r.cpuPer1k = subject.cpuMsPer1k / reference.cpuMsPer1k;
  }
  return r;
}

export function ratios(summaries: Summary[]): Ratio[] {
  const get = (id: string) => summaries.find((s) => s.id === id);
  const direct = get("direct");
  const out: Ratio[] = [];
  for (const shape of ["one", "pair"]) {
    const mesh = get(`mesh-${shape}`);
    for (const family of ["relay", "mesh", "nginx", "haproxy"]) {
      const s = get(`${family}-${shape}`);
      if (ok(s) && ok(direct)) out.push(ratio(s, direct, false));
    }
    // The floor has one shape: what the runtime costs per hop, against mesh's one hop.
    for (const peer of shape === "one" ? ["relay", "nginx", "haproxy"] : ["nginx", "haproxy"]) {
      const p = get(`${peer}-${shape}`);
      if (ok(mesh) && ok(p)) out.push(ratio(mesh, p, true));
    }
  }
  return out;
}

const fmt = (n: number, digits = 2, unit = "") => (Number.isFinite(n) ? n.toFixed(digits) + unit : "n/a");

export function targets(summaries: Summary[], connections: number[]): Target[] {
  const get = (id: string) => summaries.find((s) => s.id === id);
  const meshPair = get("mesh-pair");
  const nginxPair = get("nginx-pair");
  const out: Target[] = [];
  const both = ok(meshPair) && ok(nginxPair);

  for (const n of connections) {
    const m = meshPair?.levels.find((l) => l.connections === n);
    const g = nginxPair?.levels.find((l) => l.connections === n);
    const r = both && m && g ? m.reqPerSec / g.reqPerSec : NaN;
    for (const [goal, floor] of [["≥ 0.8× nginx pair (floor)", 0.8], ["≥ 1.0× nginx pair (later issue)", 1.0]] as const)
      out.push({
        name: `mesh pair req/s, ${n} conn`,
        goal,
        measured: Number.isFinite(r) ? `${fmt(r, 2, "×")} (${Math.round(m!.reqPerSec)} vs ${Math.round(g!.reqPerSec)})` : "n/a",
        met: Number.isFinite(r) ? r >= floor : undefined,
      });
  }

  const handshakes = (s: Summary | undefined) =>
    ok(s) && s.inboundNewConnections !== undefined ? `${s.inboundNewConnections} for ${s.requests} requests` : "n/a";
  const meshConns = ok(meshPair) ? meshPair.inboundNewConnections : undefined;
  out.push({
    name: "TLS handshakes (new inbound connections), mesh pair",
    goal: "not one per request (< 1 per 100 requests)",
    measured: `mesh ${handshakes(meshPair)}; nginx ${handshakes(nginxPair)}; haproxy ${handshakes(get("haproxy-pair"))}`,
    met: meshConns !== undefined && meshPair!.requests > 0 ? meshConns < meshPair!.requests / 100 : undefined,
  });

  const meshRows = summaries.filter((s) => s.family === "mesh" && ok(s));
  const perProxy = (pick: (s: Summary) => Record<string, number>) =>
    meshRows.flatMap((s) => Object.entries(pick(s)).map(([label, mb]) => `${s.id}/${label} ${fmt(mb, 1)}`)).join(", ") || "n/a";
  const rssText = `${perProxy((s) => s.rssPeakMb)} MB (private: ${perProxy((s) => s.privatePeakMb)} MB)`;
  const worst = meshRows.length ? Math.max(...meshRows.map(maxRssMb)) : NaN;
  // Below the floor no Bun program goes: a goal under it is the runtime's to meet, not mesh's.
  const floor = get("relay-one");
  const floorText = ok(floor) ? `; runtime floor (Bun byte relay) ${fmt(maxRssMb(floor), 1)} MB, private ${fmt(maxPrivateMb(floor), 1)} MB` : "";
  for (const [goal, limit, strict] of [["< 40 MB each", 40, true], ["≤ 26 MB each (later issue)", 26, false]] as const)
    out.push({ name: "peak RSS per mesh proxy under load", goal, measured: `${rssText}${floorText}`, met: Number.isFinite(worst) ? (strict ? worst < limit : worst <= limit) : undefined });

  const cpu = both ? meshPair.cpuMsPer1k / nginxPair.cpuMsPer1k : NaN;
  out.push({
    name: "CPU per 1k requests, mesh pair vs nginx pair",
    goal: "≤ nginx (later issue)",
    measured: both ? `${fmt(meshPair.cpuMsPer1k, 1)} vs ${fmt(nginxPair.cpuMsPer1k, 1)} ms (${fmt(cpu)}×)` : "n/a",
    met: Number.isFinite(cpu) ? cpu <= 1 : undefined,
  });
  return out;
}
