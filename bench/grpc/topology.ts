/** What every gRPC topology looks like to the runner, whoever built it. */
import type { MeshCommand } from "../mesh-command.ts";
import { isAlive } from "../proc-stats.ts";
import type { ProxyProc } from "../topology.ts";
import type { GrpcService } from "./backend.ts";

export const TOPOLOGY_IDS = ["direct", "mesh-pair", "nginx-pair"] as const;
export type TopologyId = (typeof TOPOLOGY_IDS)[number];

export const TITLES: Record<TopologyId, string> = {
  direct: "direct",
  "mesh-pair": "mesh pair (mTLS h2)",
  "nginx-pair": "nginx pair (grpc_pass, mTLS)",
};

export interface GrpcTopology {
  id: TopologyId;
  /** Where h2load connects (h2c with prior knowledge). */
  port: number;
  /** Empty for direct; pairs: outbound, then inbound. */
  proxies: ProxyProc[];
  /** This topology's own service process. */
  service: GrpcService;
  /**
   * gRPC errors the proxies answered themselves so far, counted by the proxies (mesh:
   * mesh_grpc_responses_total with a status other than 0, and other than 1 CANCELLED,
   * which is h2load leaving calls in flight when it stops). h2load sees them as HTTP 200.
   */
  proxyErrors?: () => Promise<number>;
}

export type GrpcSetup = { ok: true; topology: GrpcTopology } | { ok: false; id: TopologyId; status: "skipped" | "failed"; reason: string };

/** What a topology builder gets: its own service, certificates and a scratch directory. */
export interface BuildContext {
  tmp: string;
  mesh: MeshCommand;
  /** Certificate directories by service: "orders" (the caller side), "payments" (the callee side). */
  certs: Record<"orders" | "payments", string>;
  service: GrpcService;
}

/** Which of a topology's processes has exited, if one has: a dead proxy fails the check at once instead of at its deadline. */
export function goneFrom(t: GrpcTopology): string | undefined {
  const procs = [{ label: "service", pids: [t.service.child.pid] }, ...t.proxies];
  for (const p of procs) for (const pid of p.pids) if (!isAlive(pid)) return `${t.id} ${p.label} (pid ${pid}) exited`;
  return undefined;
}
