/** Over mTLS, an --admin-identity may use the admin API; any other workload gets 403. */
import { afterAll, expect, test } from "bun:test";
import { join } from "node:path";
import { mesh, tempDir } from "../helpers/cli.ts";
import { startControlPlane } from "../helpers/control-plane.ts";
import { stopAll } from "../helpers/procs.ts";

const tmp = tempDir("mesh-admin-id-");
afterAll(async () => {
  await stopAll();
  tmp.cleanup();
});

test("an admin SPIFFE identity can read and write through /admin; a workload cannot", async () => {
  const cp = await startControlPlane(tmp.path, ["--admin-identity", "spiffe://mesh.local/ns/mesh-system/sa/ops"]);
  const certs = async (service: string, namespace: string) => {
    const out = join(tmp.path, "certs", service);
    expect((await mesh("ca", "issue", "--service", service, "--namespace", namespace, "--ca-dir", cp.caDir, "--out", out)).code).toBe(0);
    return { cert: Bun.file(join(out, "chain.pem")), key: Bun.file(join(out, "key.pem")), ca: Bun.file(cp.bundle), checkServerIdentity: () => undefined };
  };
  const ops = await certs("ops", "mesh-system");
  const service = { apiVersion: "mesh.dev/v1alpha1", kind: "Service", metadata: { name: "web" }, spec: { ports: [{ name: "http", port: 80 }] } };
  const put = await fetch(`https://127.0.0.1:${cp.ports.api}/admin/v1/manifests`, {
    method: "PUT",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ documents: [{ source: "ops#0", manifest: service }] }),
    tls: ops,
  });
  expect(put.status).toBe(200);
  const list = (await (await fetch(`https://127.0.0.1:${cp.ports.api}/admin/v1/manifests?kind=Service`, { tls: ops })).json()) as { items: unknown[] };
  expect(list.items).toHaveLength(1);

  const web = await certs("web", "default");
  const refused = await fetch(`https://127.0.0.1:${cp.ports.api}/admin/v1/manifests?kind=Service`, { tls: web });
  expect(refused.status).toBe(403);
});
