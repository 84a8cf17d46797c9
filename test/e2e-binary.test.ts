/** Builds dist/mesh and drives it as a user would: ca init, ca issue, ca inspect, validate. */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { tempDir } from "./helpers/cli.ts";

const root = join(import.meta.dir, "..");
const tmp = tempDir();
const binary = join(tmp.path, "mesh");
afterAll(tmp.cleanup);

function run(...args: string[]) {
  const p = Bun.spawnSync([binary, ...args], { cwd: tmp.path, stderr: "pipe", env: { ...process.env, NO_COLOR: "1" } });
  return { code: p.exitCode, out: p.stdout.toString(), err: p.stderr.toString() };
}

beforeAll(() => {
  const build = Bun.spawnSync([process.execPath, "run", "build.ts"], { cwd: root, env: { ...process.env, MESH_OUTFILE: binary }, stderr: "pipe" });
  if (build.exitCode !== 0) throw new Error(`build failed: ${build.stderr}`);
}, 120_000);

test("the compiled binary reports its version and commit", () => {
  const r = run("version");
  expect(r.code).toBe(0);
  expect(r.out).toMatch(/^mesh \d+\.\d+\.\d+ \(commit \S+, bun 1\.\d+\.\d+/);
});

test("help, unknown commands and unknown flags", () => {
  const help = run("--help");
  expect(help.code).toBe(0);
  expect(help.out).toContain("Commands:");
  expect(help.out).toContain("ca ");
  expect(run("ca", "issue", "--help").out).toContain("--service NAME");
  const unknown = run("frobnicate");
  expect(unknown.code).toBe(64);
  expect(unknown.err).toContain('unknown command "frobnicate"');
  expect(unknown.err).toContain("Usage: mesh");
  const badFlag = run("ca", "init", "--colour");
  expect(badFlag.code).toBe(64);
  expect(badFlag.err).toContain("unknown flag --colour");
  expect(badFlag.err).toContain("Usage: mesh ca init");
});

test("ca init, ca issue and ca inspect from the binary; openssl accepts the chain", () => {
  expect(run("ca", "init").code).toBe(0);
  const issued = run("ca", "issue", "--service", "orders");
  expect(issued.code).toBe(0);
  const leaf = join(tmp.path, "certs", "default", "orders", "cert.pem");
  expect(existsSync(leaf)).toBe(true);
  const verify = Bun.spawnSync(["openssl", "verify", "-CAfile", "certs/root.pem", "-untrusted", "certs/intermediate.pem", leaf], { cwd: tmp.path });
  expect(verify.exitCode).toBe(0);
  const inspect = run("ca", "inspect", "certs/default/orders/chain.pem");
  expect(inspect.code).toBe(0);
  expect(inspect.out).toContain("spiffe://mesh.local/ns/default/sa/orders");
  expect(inspect.out).toMatch(/Chain:\s+valid/);
});

test("validate from the binary: errors name file, document and field", () => {
  writeFileSync(join(tmp.path, "good.yaml"), "apiVersion: mesh.dev/v1alpha1\nkind: Service\nmetadata:\n  name: orders\nspec:\n  ports:\n    - name: http\n      port: 8080\n");
  const ok = run("validate", "-f", "good.yaml");
  expect(ok.code).toBe(0);
  expect(ok.out).toContain("1 manifest");
  writeFileSync(join(tmp.path, "bad.yaml"), "apiVersion: mesh.dev/v1alpha1\nkind: Service\nmetadata:\n  name: orders\nspec:\n  ports:\n    - name: http\n      port: 80000\n");
  const bad = run("validate", "-f", "bad.yaml");
  expect(bad.code).toBe(1);
  expect(bad.err + bad.out).toContain("bad.yaml#0 spec.ports[0].port");
  // Files as arguments too, as people type them, with -f or without.
  const both = run("validate", "good.yaml", "-f", "bad.yaml");
  expect(both.code).toBe(1);
  expect(both.err + both.out).toContain("bad.yaml#0 spec.ports[0].port");
  expect(run("validate", "good.yaml").code).toBe(0);
  const none = run("validate");
  expect(none.code).toBe(64);
  expect(none.err).toContain("name a manifest file or directory");
});

test("logs are JSON lines on stderr when not on a terminal, at the chosen level", () => {
  const r = run("version", "--log-level", "debug");
  expect(r.code).toBe(0);
  const record = JSON.parse(r.err.trim().split("\n")[0]!);
  expect(record).toMatchObject({ level: 20, msg: "starting", command: "mesh version" });
  expect(run("version").err).toBe("");
  const bad = run("version", "--log-level", "loud");
  expect(bad.code).toBe(64);
  expect(bad.err).toContain("--log-level");
});
