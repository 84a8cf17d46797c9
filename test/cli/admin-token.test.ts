/**
 * `mesh apply`, `get`, `delete`, `join-token` and `check` find the admin token in
 * --admin-token-file, then $MESH_ADMIN_TOKEN, then ./data/admin-token. Run from a directory
 * without one, they say which file they looked for and how to give the token.
 */
import { afterAll, expect, test } from "bun:test";
import { realpathSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { tempDir } from "../helpers/cli.ts";

const MAIN = join(import.meta.dir, "..", "..", "src", "main.ts");
const tmp = tempDir("mesh-admin-token-");
afterAll(() => tmp.cleanup());
writeFileSync(join(tmp.path, "services.yaml"), "apiVersion: mesh.dev/v1alpha1\nkind: Service\nmetadata: { name: payments }\nspec:\n  ports: [{ name: http, port: 80 }]\n");

for (const argv of [["get", "service"], ["apply", "-f", "services.yaml"], ["check"]]) test(`mesh ${argv[0]} without a token names the default file it looked for`, () => {
  const env = { ...process.env };
  delete env.MESH_ADMIN_TOKEN;
  const p = Bun.spawnSync([process.execPath, MAIN, ...argv], { cwd: tmp.path, env, stdout: "pipe", stderr: "pipe" });
  const err = p.stderr.toString();
  expect(p.exitCode).toBe(64);
  const looked = join(realpathSync(tmp.path), "data", "admin-token");
  expect(err).toContain(`error: --admin-token-file: no admin token: ${looked} (the default, ./data/admin-token) does not exist`);
  expect(err).toContain("run from the directory 'mesh control-plane' runs in, or give --admin-token-file <data-dir>/admin-token or set $MESH_ADMIN_TOKEN");
});
