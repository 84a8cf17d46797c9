/** What every TCP topology looks like to the runner, whoever built it. */
import type { MeshCommand } from "../mesh-command.ts";
import { isAlive } from "../proc-stats.ts";
import type { ProxyProc } from "../topology.ts";
import type { EchoService } from "./backend.ts";

export const TOPOLOGY_IDS = ["direct", "mesh-pair", "haproxy-pair"] as const;
export type TopologyId = (typeof TOPOLOGY_IDS)[number];

export const TITLES: Record<TopologyId, string> = {
  direct: "direct",
  "mesh-pair": "mesh pair (mTLS mesh-tcp/1)",
  "haproxy-pair": "haproxy pair (mode tcp, mTLS)",
};

/** What the proxies themselves counted over some span: connections they ended other than in order, and in order. */
export interface ProxyCounts {
  failed: number;
  ok: number;
}

export interface TcpTopology {
  id: TopologyId;
  /** Where the client connects. */
  port: number;
  /** Empty for direct; pairs: the caller's side, then the callee's. */
  proxies: ProxyProc[];
  /** This topology's own echo service. */
  echo: EchoService;
  /**
   * The proxies' own count of carried connections so far, once none is open (mesh:
   * mesh_tcp_connections_total by result, per side, summed; the client cannot see a side
   * that ended a connection as a reset if the other side ended it in order).
   */
  proxyCounts?: () => Promise<ProxyCounts>;
}

export type TcpSetup = { ok: true; topology: TcpTopology } | { ok: false; id: TopologyId; status: "skipped" | "failed"; reason: string };

/** What a topology builder gets: its own echo service, certificates and a scratch directory. */
export interface BuildContext {
  tmp: string;
  mesh: MeshCommand;
  /** Certificate directories by service: "orders" (the caller's side), "payments" (the callee's side). */
  certs: Record<"orders" | "payments", string>;
  echo: EchoService;
}

/** Which of a topology's processes has exited, if one has. */
export function goneFrom(t: TcpTopology): string | undefined {
  const procs = [{ label: "echo", pids: [t.echo.child.pid] }, ...t.proxies];
  for (const p of procs) for (const pid of p.pids) if (!isAlive(pid)) return `${t.id} ${p.label} (pid ${pid}) exited`;
  return undefined;
}
