/**
 * The control plane signs with an operator-supplied intermediate: a CA directory that
 * holds the root certificate but not the root key (which stays offline).
 */
import { afterAll, expect, test } from "bun:test";
import { copyFileSync, existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { mesh, tempDir } from "../helpers/cli.ts";
import { cpSidecar, serviceManifest, startControlPlane } from "../helpers/control-plane.ts";
import { stopAll } from "../helpers/procs.ts";

const tmp = tempDir("mesh-operator-ca-");
afterAll(async () => {
  await stopAll();
  tmp.cleanup();
});

test("with only the root certificate and an intermediate, certificates are signed by that intermediate", async () => {
  const offline = join(tmp.path, "offline-ca");
  expect((await mesh("ca", "init", "--trust-domain", "corp.example", "--out", offline)).code).toBe(0);
  const handed = join(tmp.path, "ca");
  mkdirSync(handed);
  for (const f of ["root.pem", "bundle.pem", "intermediate.pem", "intermediate.key"]) copyFileSync(join(offline, f), join(handed, f));
  expect(existsSync(join(handed, "root.key"))).toBe(false);

  const cp = await startControlPlane(tmp.path);
  expect(cp.ready).toMatchObject({ trustDomain: "corp.example" });
  await cp.apply(serviceManifest("orders"));
  const orders = await cpSidecar(cp, tmp.path, "orders", "1", "http://127.0.0.1:1");
  expect(orders.ready).toMatchObject({ identity: "spiffe://corp.example/ns/default/sa/orders" });
  const inspect = await mesh("ca", "inspect", join(tmp.path, "certs", "orders-1", "chain.pem"), "--bundle", join(offline, "bundle.pem"));
  expect(inspect.out).toContain("mesh intermediate CA");
  expect(inspect.code).toBe(0);
});
