/**
 * `npm start`: builds dist/mesh if it is missing or older than its sources, then runs
 * `dist/mesh demo` (arguments after `npm start --` are passed on). Needs only what
 * `npm install` brought: Bun comes from node_modules/.bin.
 */
import { existsSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";

const root = join(import.meta.dir, "..");
const binary = join(root, "dist", "mesh");

/** Newest modification time under `path` (a file or a directory tree). */
function newest(path: string): number {
  const st = statSync(path);
  if (!st.isDirectory()) return st.mtimeMs;
  return readdirSync(path).reduce((max, name) => Math.max(max, newest(join(path, name))), st.mtimeMs);
}

function stale(): string | undefined {
  if (!existsSync(binary)) return "dist/mesh does not exist yet";
  const built = statSync(binary).mtimeMs;
  const inputs = ["src", "build.ts", "package.json"].map((p) => join(root, p)).filter(existsSync);
  return inputs.some((p) => newest(p) > built) ? "the sources changed since dist/mesh was built" : undefined;
}

const why = stale();
if (why) {
  console.log(`Building dist/mesh (${why})…`);
  const build = Bun.spawnSync([process.execPath, "run", "build.ts"], { cwd: root, stdio: ["inherit", "inherit", "inherit"] });
  if (build.exitCode !== 0) process.exit(build.exitCode ?? 1);
}

const demo = Bun.spawn([binary, "demo", ...process.argv.slice(2)], { stdio: ["inherit", "inherit", "inherit"] });
// Ctrl-C and a closing terminal reach the demo directly (same process group): wait for it
// to clean up rather than die first. A SIGTERM sent to this process alone is passed on.
process.on("SIGINT", () => {});
process.on("SIGHUP", () => {});
process.on("SIGTERM", () => demo.kill("SIGTERM"));
process.exit(await demo.exited);
