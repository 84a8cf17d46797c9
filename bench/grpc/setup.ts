/**
 * Starts every selected topology, each with its own service process (sequentially, so
 * start-up never overlaps another), and proves each serves gRPC: a first call that
 * succeeds, then several on one connection, and the service saw them all.
 */
import { startGrpcService } from "./backend.ts";
import { problemWithCall, waitUntilServing } from "./check.ts";
import { meshPair } from "./mesh.ts";
import { nginxPair } from "./nginx.ts";
import { goneFrom, type BuildContext, type GrpcSetup, type GrpcTopology, type TopologyId } from "./topology.ts";
import type { ServiceStats } from "./service.ts";

const CHECK_CALLS = 5;

type Builder = (ctx: BuildContext) => Promise<GrpcSetup>;

const BUILDERS: Record<TopologyId, Builder> = {
  direct: async (ctx) => ({ ok: true, topology: { id: "direct", port: ctx.service.port, service: ctx.service, proxies: [] } }),
  "mesh-pair": meshPair,
  "nginx-pair": nginxPair,
};

/** Values whose count grew between two readings: what the check's calls carried. */
function grown(before: Record<string, number>, after: Record<string, number>): string {
  return Object.keys(after).filter((k) => after[k]! > (before[k] ?? 0)).join(", ") || "-";
}

async function prove(t: GrpcTopology): Promise<string> {
  await waitUntilServing(t.port, 15_000, () => goneFrom(t));
  const before: ServiceStats = await t.service.stats();
  const errorsBefore = t.proxyErrors ? await t.proxyErrors() : 0;
  const problem = await problemWithCall(t.port, CHECK_CALLS);
  if (problem) throw new Error(problem);
  const after = await t.service.stats();
  if (after.answered - before.answered !== CHECK_CALLS) throw new Error(`${CHECK_CALLS} calls succeeded, but the service answered ${after.answered - before.answered}`);
  if (t.proxyErrors && (await t.proxyErrors()) !== errorsBefore) throw new Error("the proxies counted gRPC errors during the check");
  return `service saw :authority ${grown(before.authorities, after.authorities)}; x-mesh-client-id ${grown(before.clientIds, after.clientIds)}`;
}

export async function startTopologies(ids: readonly TopologyId[], base: Omit<BuildContext, "service">, log: (line: string) => void): Promise<{ setups: GrpcSetup[]; seen: Partial<Record<TopologyId, string>> }> {
  const setups: GrpcSetup[] = [];
  const seen: Partial<Record<TopologyId, string>> = {};
  for (const id of ids) {
    let setup: GrpcSetup;
    try {
      const service = await startGrpcService(`${id}/service`);
      setup = await BUILDERS[id]({ ...base, service });
    } catch (err) {
      setup = { ok: false, id, status: "failed", reason: (err as Error).message };
    }
    if (setup.ok) {
      try {
        seen[id] = await prove(setup.topology);
      } catch (err) {
        setup = { ok: false, id, status: "failed", reason: `started, but does not serve: ${(err as Error).message}` };
      }
    }
    log(setup.ok ? `  ${id}: ready on 127.0.0.1:${setup.topology.port}; ${seen[id]}` : `  ${id}: ${setup.status} — ${setup.reason.split("\n")[0]}`);
    setups.push(setup);
  }
  return { setups, seen };
}
