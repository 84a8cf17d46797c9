/**
 * Starts every selected topology, each with its own echo service (one after another, so
 * start-ups never overlap), and proves each carries TCP: a first exchange that succeeds,
 * then several more on new connections, and for mesh, each counted as ended in order by
 * both sidecars.
 */
import { startEcho } from "./backend.ts";
import { problemWithExchange, waitUntilCarrying } from "./check.ts";
import { haproxyPair } from "./haproxy.ts";
import { meshPair } from "./mesh.ts";
import { goneFrom, type BuildContext, type TcpSetup, type TcpTopology, type TopologyId } from "./topology.ts";

const CHECK_EXCHANGES = 5;

type Builder = (ctx: BuildContext) => Promise<TcpSetup>;

const BUILDERS: Record<TopologyId, Builder> = {
  direct: async (ctx) => ({ ok: true, topology: { id: "direct", port: ctx.echo.port, echo: ctx.echo, proxies: [] } }),
  "mesh-pair": meshPair,
  "haproxy-pair": haproxyPair,
};

async function prove(t: TcpTopology): Promise<void> {
  await waitUntilCarrying(t.port, 15_000, () => goneFrom(t));
  const before = await t.proxyCounts?.();
  for (let i = 1; i <= CHECK_EXCHANGES; i++) {
    const problem = await problemWithExchange(t.port);
    if (problem) throw new Error(`exchange ${i} of ${CHECK_EXCHANGES}: ${problem}`);
  }
  const after = await t.proxyCounts?.();
  if (before && after) {
    if (after.failed !== before.failed) throw new Error(`the proxies ended ${after.failed - before.failed} of the check's connections other than in order`);
    if (after.ok - before.ok !== CHECK_EXCHANGES) throw new Error(`${CHECK_EXCHANGES} exchanges succeeded, but the proxies counted ${after.ok - before.ok} connections carried`);
  }
}

export async function startTopologies(ids: readonly TopologyId[], base: Omit<BuildContext, "echo">, log: (line: string) => void): Promise<TcpSetup[]> {
  const setups: TcpSetup[] = [];
  for (const id of ids) {
    let setup: TcpSetup;
    try {
      const echo = await startEcho(`${id}/echo`);
      setup = await BUILDERS[id]({ ...base, echo });
    } catch (err) {
      setup = { ok: false, id, status: "failed", reason: (err as Error).message };
    }
    if (setup.ok) {
      try {
        await prove(setup.topology);
      } catch (err) {
        setup = { ok: false, id, status: "failed", reason: `started, but does not carry TCP: ${(err as Error).message}` };
      }
    }
    log(setup.ok ? `  ${id}: ready on 127.0.0.1:${setup.topology.port}; ${CHECK_EXCHANGES + 1} exchanges echoed, FIN both ways` : `  ${id}: ${setup.status} — ${setup.reason.split("\n")[0]}`);
    setups.push(setup);
  }
  return setups;
}
