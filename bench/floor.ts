/**
 * The "Bun byte relay (floor)" topology: bench/relay.ts between client and service. It
 * runs the way mesh runs — compiled into a binary of its own when mesh is a binary
 * (a compiled executable maps more of the runtime than `bun file.ts`), else under this
 * Bun — so its RSS and CPU are the runtime's floor for the mesh rows.
 */
import { join } from "node:path";
import type { MeshCommand } from "./mesh-command.ts";
import { spawn, waitForLine } from "./procs.ts";
import type { BuildContext, Setup } from "./topology.ts";

const SOURCE = join(import.meta.dir, "relay.ts");

async function relayArgv(mesh: MeshCommand, tmp: string): Promise<string[]> {
  if (mesh.argv[0] === process.execPath) return [process.execPath, SOURCE];
  const outfile = join(tmp, "relay");
  const built = await Bun.build({ entrypoints: [SOURCE], compile: { outfile }, minify: true });
  if (!built.success) throw new Error(`could not compile bench/relay.ts: ${built.logs.map(String).join("; ")}`);
  return [outfile];
}

export async function relayFloor(mesh: MeshCommand, ctx: BuildContext): Promise<Setup> {
  try {
    const child = spawn("relay-one", [...(await relayArgv(mesh, ctx.tmp)), String(ctx.servicePort)]);
    const line = await waitForLine(child, (l) => l.includes('"ready"'), 10_000);
    const port = (JSON.parse(line) as { port: number }).port;
    return { ok: true, topology: { id: "relay-one", family: "relay", shape: "one", url: `http://127.0.0.1:${port}/`, proxies: [{ label: "relay", pids: [child.pid] }] } };
  } catch (err) {
    return { ok: false, id: "relay-one", family: "relay", shape: "one", status: "failed", reason: (err as Error).message };
  }
}
