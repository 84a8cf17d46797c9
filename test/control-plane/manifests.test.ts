/** mesh apply / get / delete, join-token and check against a running control plane, and the watched policies directory. */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { copyFileSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { mesh, tempDir } from "../helpers/cli.ts";
import { eventually, startControlPlane, type TestControlPlane } from "../helpers/control-plane.ts";
import { stopAll } from "../helpers/procs.ts";

const tmp = tempDir("mesh-cp-manifests-");
const REPO_POLICIES = join(import.meta.dir, "..", "..", "policies");
let cp: TestControlPlane;
let admin: string[];

beforeAll(async () => {
  cp = await startControlPlane(tmp.path);
  const tokenFile = join(tmp.path, "admin.token");
  writeFileSync(tokenFile, cp.adminToken);
  admin = ["--admin-url", `http://127.0.0.1:${cp.ports.admin}`, "--admin-token-file", tokenFile];
});
afterAll(async () => {
  await stopAll();
  tmp.cleanup();
});

const service = (name: string) => `apiVersion: mesh.dev/v1alpha1\nkind: Service\nmetadata: {name: ${name}, namespace: shop}\nspec:\n  ports: [{name: http, port: 80}]\n`;
const policy = (name: string, service: string) =>
  `apiVersion: mesh.dev/v1alpha1\nkind: DestinationPolicy\nmetadata: {name: ${name}, namespace: shop}\nspec:\n  service: ${service}\n  timeouts: {request: 2s}\n`;

function file(name: string, text: string): string {
  const path = join(tmp.path, name);
  writeFileSync(path, text);
  return path;
}

test("apply stores every manifest or none; get shows them as written; delete refuses a referenced service", async () => {
  const bad = file("bad.yaml", service("payments") + "---\n" + policy("payments", "payments").replace("2s", "2"));
  const r1 = await mesh("apply", "-f", bad, ...admin);
  expect(r1.code).toBe(65);
  expect(r1.err).toContain(`${bad}#1 spec.timeouts.request: duration 2 has no unit`);
  expect((await mesh("get", "service", ...admin)).out).toBe("[]");

  const dangling = file("dangling.yaml", policy("payments", "paymnts"));
  const r2 = await mesh("apply", "-f", dangling, ...admin);
  expect(r2.code).toBe(65);
  expect(r2.err).toContain(`${dangling}#0 spec.service: no Service "paymnts" in namespace "shop"`);

  const good = file("good.yaml", service("payments") + "---\n" + policy("payments", "payments"));
  const r3 = await mesh("apply", "-f", good, ...admin);
  expect(r3.out.split("\n")).toEqual(["Service/shop/payments created", "DestinationPolicy/shop/payments created"]);
  expect((await mesh("apply", "-f", good, ...admin)).out).toContain("Service/shop/payments unchanged");

  const got = await mesh("get", "destinationpolicy", "payments", "-n", "shop", ...admin);
  expect(JSON.parse(got.out)).toMatchObject({ kind: "DestinationPolicy", spec: { service: "payments", timeouts: { request: "2s" } } });

  const refused = await mesh("delete", "service", "payments", "-n", "shop", ...admin);
  expect(refused.code).not.toBe(0);
  expect(refused.err).toContain('used by DestinationPolicy "payments"');
  expect((await mesh("delete", "destinationpolicy", "payments", "-n", "shop", ...admin)).out).toBe("DestinationPolicy/shop/payments deleted");
  expect((await mesh("delete", "service", "payments", "-n", "shop", ...admin)).code).toBe(0);
  expect((await mesh("delete", "service", "payments", "-n", "shop", ...admin)).err).toContain('no Service "shop/payments"');
  expect((await mesh("get", "sevice", ...admin)).err).toContain('did you mean "Service"');
});

test("apply refuses a Service claiming another's address, in the batch or stored; replacing the claimant frees it", async () => {
  const at = (name: string, address: string) => service(name).replace("spec:\n", `spec:\n  addresses: [${address}]\n`);
  expect((await mesh("apply", "-f", file("vip-a.yaml", at("vip-a", "10.96.0.5")), ...admin)).code).toBe(0);
  const stored = await mesh("apply", "-f", file("vip-b.yaml", at("vip-b", "10.96.0.5")), ...admin);
  expect(stored.code).toBe(65);
  expect(stored.err).toContain('#0 spec.addresses: 10.96.0.5 is Service "shop/vip-a"\'s already; no two Services share an address');
  const batch = file("vip-cd.yaml", at("vip-c", "10.96.0.7") + "---\n" + at("vip-d", "10.96.0.7"));
  expect((await mesh("apply", "-f", batch, ...admin)).err).toContain(`${batch}#1 spec.addresses: 10.96.0.7 is ${batch}#0's already`);
  // vip-a gives 10.96.0.5 up in the same batch that gives it to vip-b.
  const moved = await mesh("apply", "-f", file("vip-moved.yaml", at("vip-a", "10.96.0.6") + "---\n" + at("vip-b", "10.96.0.5")), ...admin);
  expect(moved.code).toBe(0);
  for (const name of ["vip-a", "vip-b"]) expect((await mesh("delete", "service", name, "-n", "shop", ...admin)).code).toBe(0);
});

test("local kinds are refused: they configure one process", async () => {
  const local = file("local.yaml", "apiVersion: mesh.dev/v1alpha1\nkind: ProxyConfig\nmetadata: {name: web}\nspec: {upstream: 'http://127.0.0.1:8080'}\n");
  const r = await mesh("apply", "-f", local, ...admin);
  expect(r.err).toContain("kind: ProxyConfig configures one process");
});

test("apply -f DIR skips the per-process kinds a policies directory holds beside the shared ones; named as a file, one is refused", async () => {
  const dir = join(tmp.path, "apply-dir");
  mkdirSync(dir, { recursive: true });
  for (const name of ["control-plane.yaml", "proxy.yaml"]) copyFileSync(join(REPO_POLICIES, name), join(dir, name));
  writeFileSync(join(dir, "services.yaml"), service("dir-web"));
  const r = await mesh("apply", "-f", dir, ...admin);
  expect([r.code, r.out]).toEqual([0, "Service/shop/dir-web created"]);
  expect(r.err).toContain("skipped 2 manifests of per-process kinds (ControlPlaneConfig, ProxyConfig");
  const named = await mesh("apply", "-f", join(dir, "control-plane.yaml"), ...admin);
  expect(named.code).toBe(65);
  expect(named.err).toContain("kind: ControlPlaneConfig configures one process");
  expect((await mesh("delete", "service", "dir-web", "-n", "shop", ...admin)).code).toBe(0);
});

test("the policies directory is watched: a good change applies, a bad one keeps the last good set", async () => {
  const dir = join(tmp.path, "cp-policies");
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "web.yaml"), service("web"));
  expect(await eventually(async () => (await mesh("get", "service", "web", "-n", "shop", ...admin)).code === 0)).toBe(true);
  writeFileSync(join(dir, "web.yaml"), service("web").replace("port: 80", "port: 99999"));
  await Bun.sleep(1000);
  const kept = JSON.parse((await mesh("get", "service", "web", "-n", "shop", ...admin)).out);
  expect(kept.spec.ports[0].port).toBe(80);
  expect(cp.stderr()).toContain("policies rejected; the last good set keeps serving");
  writeFileSync(join(dir, "web.yaml"), service("web2"));
  expect(await eventually(async () => (await mesh("get", "service", "web", "-n", "shop", ...admin)).code !== 0)).toBe(true);
  expect((await mesh("get", "service", "web2", "-n", "shop", ...admin)).code).toBe(0);
});

test("join-token --out writes the token 0600 and never overwrites without --force", async () => {
  const out = join(tmp.path, "orders.token");
  expect((await mesh("join-token", "--service", "orders", "--out", out, ...admin)).code).toBe(0);
  expect(statSync(out).mode & 0o777).toBe(0o600);
  expect(readFileSync(out, "utf8").trim().split(".")).toHaveLength(3);
  const again = await mesh("join-token", "--service", "orders", "--out", out, ...admin);
  expect(again.code).toBe(73);
  expect(again.err).toContain("already exists; pass --force");
  expect((await mesh("join-token", "--service", "orders", "--out", out, "--force", ...admin)).code).toBe(0);
});

/** The live join tokens granting `service` (in the default namespace), as 'mesh join-token list' shows them. */
async function liveTokensFor(service: string): Promise<string[]> {
  const listed = await mesh("join-token", "list", ...admin);
  return listed.out.split("\n").filter((l) => l.includes(`/ns/default/sa/${service} `));
}

test("join-token --out: an existing file is refused before a token is made; a write that fails after revokes the token", async () => {
  const existing = join(tmp.path, "kept.token");
  writeFileSync(existing, "kept\n");
  const refused = await mesh("join-token", "--service", "kept", "--out", existing, ...admin);
  expect([refused.code, readFileSync(existing, "utf8")]).toEqual([73, "kept\n"]);
  expect(refused.err).toContain("already exists; pass --force");
  expect(await liveTokensFor("kept")).toEqual([]);

  // Under a regular file no directory can be made: the write fails once the token exists.
  const unwritable = join(existing, "lost.token");
  const failed = await mesh("join-token", "--service", "lost", "--out", unwritable, ...admin);
  expect(failed.code).toBe(73);
  expect(failed.err).toMatch(/kept\.token: is not a directory, so .*lost\.token cannot be written; join token [0-9a-f-]{36} revoked/);
  expect(await liveTokensFor("lost")).toEqual([]);
});

test("join-token: a --ttl or --uses out of range is a usage error naming the flag, and no token is made", async () => {
  for (const [flags, flag] of [
    [["--ttl", "25h"], "--ttl"],
    [["--ttl", "721h", "--uses", "2"], "--ttl"],
    [["--ttl", "0"], "--ttl"],
    [["--ttl", "soon"], "--ttl"],
    [["--uses", "10001"], "--uses"],
  ] as const) {
    const r = await mesh("join-token", "--service", "ranged", ...flags, ...admin);
    expect([r.code, r.err.split("\n")[0]]).toEqual([64, expect.stringContaining(`error: ${flag}: `)]);
  }
  expect(await liveTokensFor("ranged")).toEqual([]);
  expect((await mesh("join-token", "--service", "ranged", "--ttl", "720h", "--uses", "2", ...admin)).code).toBe(0);
});

test("join-token: a --service or --namespace no identity can hold is a usage error naming the flag", async () => {
  for (const [flags, flag] of [
    [["--service", "Orders"], "--service"],
    [["--service", "a/b"], "--service"],
    [["--service", "orders", "--namespace", "ns.x"], "--namespace"],
    [["--service", "control-plane", "--namespace", "mesh-system"], "--service"],
  ] as const) {
    const r = await mesh("join-token", ...flags, ...admin);
    expect([r.code, r.err.split("\n")[0]]).toEqual([64, expect.stringContaining(`error: ${flag}: `)]);
  }
});

test("check with a refused admin token says to fix the token, not to start the control plane", async () => {
  const wrong = join(tmp.path, "wrong.token");
  writeFileSync(wrong, "x".repeat(cp.adminToken.length));
  const r = await mesh("check", "--admin-url", `http://127.0.0.1:${cp.ports.admin}`, "--admin-token-file", wrong);
  expect(r.code).toBe(1);
  expect(r.out).toContain("FAIL  control plane: the control plane refused the admin token");
  expect(r.out).toContain("fix: pass the token 'mesh control-plane' wrote: --admin-token-file <data-dir>/admin-token");
  expect(r.out).not.toContain("start it with 'mesh control-plane'");
});
