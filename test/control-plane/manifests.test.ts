/** mesh apply / get / delete against a running control plane, and the watched policies directory. */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { mesh, tempDir } from "../helpers/cli.ts";
import { eventually, startControlPlane, type TestControlPlane } from "../helpers/control-plane.ts";
import { stopAll } from "../helpers/procs.ts";

const tmp = tempDir("mesh-cp-manifests-");
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
