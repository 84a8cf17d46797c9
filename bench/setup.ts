/** Starts every selected topology (sequentially, so start-up never overlaps a measurement) and proves each serves. */
import { problemWith, waitUntilServing } from "./check.ts";
import { haproxyOne, haproxyPair } from "./haproxy.ts";
import type { MeshCommand } from "./mesh-command.ts";
import { relayFloor } from "./floor.ts";
import { meshOne, meshPair } from "./mesh.ts";
import { nginxOne, nginxPair } from "./nginx.ts";
import type { BuildContext, Setup } from "./topology.ts";

type Builder = () => Promise<Setup>;

export async function startTopologies(only: Set<string>, mesh: MeshCommand, ctx: BuildContext, log: (line: string) => void): Promise<Setup[]> {
  const builders: Record<string, Builder> = {
    direct: async () => ({ ok: true, topology: { id: "direct", family: "direct", shape: "direct", url: `http://127.0.0.1:${ctx.servicePort}/`, proxies: [] } }),
    "relay-one": () => relayFloor(mesh, ctx),
    "mesh-one": () => meshOne(mesh, ctx),
    "nginx-one": () => nginxOne(ctx),
    "haproxy-one": () => haproxyOne(ctx),
    "mesh-pair": () => meshPair(mesh, ctx),
    "nginx-pair": () => nginxPair(ctx),
    "haproxy-pair": () => haproxyPair(ctx),
  };
  const setups: Setup[] = [];
  for (const [id, build] of Object.entries(builders)) {
    if (!only.has(id)) continue;
    let setup = await build();
    if (setup.ok) {
      const t = setup.topology;
      try {
        await waitUntilServing(t.url, 10_000);
        // A second request on a fresh connection: the first may have been served before a pool existed.
        const again = await problemWith(t.url);
        if (again) throw new Error(again);
      } catch (err) {
        setup = { ok: false, id: t.id, family: t.family, shape: t.shape, status: "failed", reason: `started, but does not serve: ${(err as Error).message}` };
      }
    }
    log(setup.ok ? `  ${id}: ready at ${setup.topology.url}` : `  ${id}: ${setup.status} — ${setup.reason.split("\n")[0]}`);
    setups.push(setup);
  }
  return setups;
}
