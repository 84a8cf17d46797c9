/**
 * Compiles dist/mesh: one self-contained executable (Bun runtime included), with
 * bytecode for fast start and the version and commit baked in.
 */
import { $ } from "bun";
import pkg from "./package.json" with { type: "json" };

const outfile = process.env.MESH_OUTFILE ?? "dist/mesh";
const commit = process.env.MESH_COMMIT ?? ((await $`git rev-parse --short HEAD`.nothrow().quiet().text()).trim() || "unknown");

const result = await Bun.build({
  entrypoints: ["src/main.ts"],
  compile: { outfile },
  bytecode: true,
  format: "esm",
  minify: true,
  sourcemap: "linked",
  define: {
    MESH_VERSION: JSON.stringify(pkg.version),
    MESH_COMMIT: JSON.stringify(commit),
  },
});

if (!result.success) {
  for (const log of result.logs) console.error(log);
  process.exit(1);
}
console.log(`built ${outfile} (mesh ${pkg.version}, commit ${commit})`);
