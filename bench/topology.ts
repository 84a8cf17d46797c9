/** What every topology looks like to the runner, whoever built it (mesh, nginx, haproxy). */
import { cpuSeconds, memoryKb } from "./proc-stats.ts";

/** "relay": the runtime's floor (bench/relay.ts), not a proxy. */
export type Family = "direct" | "mesh" | "nginx" | "haproxy" | "relay";
export type Shape = "direct" | "one" | "pair";

/** One proxy instance: a process, plus any workers it forked (nginx master + worker). */
export interface ProxyProc {
  label: string;
  pids: number[];
}

export interface Topology {
  id: string;
  family: Family;
  shape: Shape;
  /** Where the load generator sends; always with `Host: <service>`. */
  url: string;
  proxies: ProxyProc[];
  /** New TLS connections accepted by the inbound proxy so far (pairs only). */
  inboundConnections?: () => Promise<number>;
  /** How many connections a reading of `inboundConnections` itself adds (a stats request on the same server). */
  connectionsPerReading?: number;
}

export type Setup =
  | { ok: true; topology: Topology }
  | { ok: false; id: string; family: Family; shape: Shape; status: "skipped" | "failed"; reason: string };

export const topologyId = (family: Family, shape: Shape) => (shape === "direct" ? "direct" : `${family}-${shape}`);

export function title(family: Family, shape: Shape): string {
  if (shape === "direct") return "direct";
  if (family === "relay") return "Bun byte relay (floor)";
  return shape === "one" ? `${family} one proxy` : `${family} pair (mTLS)`;
}

/** Resident memory of one proxy, all its processes: VmRSS and the private (anonymous) part of it, MB. */
export function proxyMemoryMb(p: ProxyProc): { rss: number; private: number } {
  const kb = p.pids.map(memoryKb);
  const total = (part: "rss" | "private") => kb.reduce((sum, m) => sum + m[part], 0) / 1024;
  return { rss: total("rss"), private: total("private") };
}

/** Peak VmRSS and private memory of each proxy, by label, over the samples taken. */
export function memoryPeaks(proxies: readonly ProxyProc[]) {
  const rssPeakMb: Record<string, number> = {};
  const privatePeakMb: Record<string, number> = {};
  const sample = () => {
    for (const p of proxies) {
      const now = proxyMemoryMb(p);
      rssPeakMb[p.label] = Math.max(rssPeakMb[p.label] ?? 0, now.rss);
      privatePeakMb[p.label] = Math.max(privatePeakMb[p.label] ?? 0, now.private);
    }
  };
  return { rssPeakMb, privatePeakMb, sample };
}

export function proxyCpuSeconds(p: ProxyProc): number {
  return p.pids.reduce((sum, pid) => sum + cpuSeconds(pid), 0);
}

/** What a topology builder gets: the shared service, certificates and a scratch directory. */
export interface BuildContext {
  tmp: string;
  servicePort: number;
  /** Certificate directories by service: "orders" (the caller side), "payments" (the callee side). */
  certs: Record<"orders" | "payments", string>;
}
