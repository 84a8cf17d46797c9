/** Which mesh the bench runs: the compiled binary when there is one, else the source under this Bun. */
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";

export interface MeshCommand {
  argv: string[];
  describe: string;
}

export const REPO_ROOT = join(import.meta.dir, "..");

/** `choice`: a path to a mesh binary, "source", or undefined for dist/mesh if built. */
export function meshCommand(choice: string | undefined): MeshCommand {
  const fromSource = { argv: [process.execPath, join(REPO_ROOT, "src", "main.ts")], describe: `source: bun ${Bun.version} src/main.ts` };
  if (choice === "source") return fromSource;
  if (choice) return { argv: [resolve(choice)], describe: `binary: ${choice}` };
  const dist = join(REPO_ROOT, "dist", "mesh");
  if (existsSync(dist)) return { argv: [dist], describe: "binary: dist/mesh" };
  return { ...fromSource, describe: `${fromSource.describe} (no dist/mesh; npm run build makes it)` };
}

/** Runs a short mesh command to completion, bounded in time; throws with its stderr on failure. */
export function runMeshSync(mesh: MeshCommand, args: string[]): string {
  const r = Bun.spawnSync([...mesh.argv, ...args], { stdout: "pipe", stderr: "pipe", timeout: 30_000 });
  if (r.exitCode !== 0) throw new Error(`mesh ${args.join(" ")} exited ${r.exitCode}: ${r.stderr.toString().trim()}`);
  return r.stdout.toString().trim();
}
