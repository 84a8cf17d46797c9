/**
 * A control plane on an etcd that serves clients over TLS and asks each for a certificate
 * (--client-cert-auth), as production clusters do: --etcd-ca, --etcd-cert and --etcd-key
 * (or store.tls in its config file). Flags that cannot work are refused before anything
 * starts; an etcd reached without TLS off this host is warned about. (A client without a
 * certificate is kept out: test/store/etcd-tls.test.ts; a start whose etcd does not
 * answer ends naming it: test/cli/control-plane-flags.test.ts.)
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { plaintextRemoteEtcd } from "../../src/cli/control-plane-settings.ts";
import { mesh, tempDir } from "../helpers/cli.ts";
import { serviceManifest, startControlPlane } from "../helpers/control-plane.ts";
import { etcdInstalled, startEtcdCluster, type EtcdCluster } from "../helpers/etcd.ts";
import { stopAll } from "../helpers/procs.ts";

const tmp = tempDir("mesh-cp-etcd-tls-");
let etcd: EtcdCluster;

if (etcdInstalled("these tests")) {
  beforeAll(async () => {
    etcd = await startEtcdCluster(1, { tls: true });
  });
  afterAll(async () => {
    await stopAll();
    await etcd?.stop();
    tmp.cleanup();
  });

  const tlsFlags = () => ["--etcd-ca", etcd.clientTls!.ca, "--etcd-cert", etcd.clientTls!.cert, "--etcd-key", etcd.clientTls!.key];

  test("with its client certificate, the control plane keeps its manifests in etcd over TLS; a second replica sees them", async () => {
    const flags = ["--store", "etcd", "--etcd-endpoint", etcd.endpoints[0]!, ...tlsFlags()];
    const first = await startControlPlane(join(tmp.path, "a"), flags, "cp1");
    await first.apply(serviceManifest("payments"));
    const second = await startControlPlane(join(tmp.path, "b"), flags, "cp2");
    const listed = (await (await second.admin("GET", "/v1/manifests?kind=Service")).json()) as { items: { metadata: { name: string } }[] };
    expect(listed.items.map((m) => m.metadata.name)).toEqual(["payments"]);
    expect(first.stderr()).not.toContain("reached without TLS");
  });

  test("the same settings from the config file's store.tls", async () => {
    const config = join(tmp.path, "cp.yaml");
    const { ca, cert, key } = etcd.clientTls!;
    writeFileSync(
      config,
      ["apiVersion: mesh.dev/v1alpha1", "kind: ControlPlaneConfig", "metadata: { name: cp }", "spec:", "  store:", "    type: etcd", `    endpoints: [${etcd.endpoints[0]}]`, `    tls: { ca: ${ca}, cert: ${cert}, key: ${key} }`].join("\n"),
    );
    const cp = await startControlPlane(join(tmp.path, "c"), ["--config", config], "cp3");
    const listed = (await (await cp.admin("GET", "/v1/manifests?kind=Service")).json()) as { items: unknown[] };
    expect(listed.items.length).toBe(1);
  });

  test("flags that cannot work are refused before anything is written", async () => {
    const dir = join(tmp.path, "e");
    const base = ["control-plane", "--data-dir", join(dir, "data"), "--ca-dir", join(dir, "ca"), "--store", "etcd"];
    const { ca, cert, key } = etcd.clientTls!;
    const cases: [string[], number, string][] = [
      [["--etcd-endpoint", etcd.endpoints[0]!, "--etcd-cert", cert], 64, "--etcd-key"],
      [["--etcd-endpoint", etcd.endpoints[0]!, "--etcd-key", key], 64, "--etcd-cert"],
      [["--etcd-endpoint", etcd.endpoints[0]!.replace("https:", "http:"), "--etcd-ca", ca], 64, "is plain HTTP, but TLS to etcd was asked for"],
      [["--etcd-endpoint", etcd.endpoints[0]!, "--etcd-ca", join(dir, "no-such.pem")], 65, "no-such.pem"],
    ];
    for (const [flags, code, says] of cases) {
      const r = await mesh(...base, ...flags);
      expect({ flags, code: r.code, says: r.err.includes(says) }).toEqual({ flags, code, says: true });
    }
    const { existsSync } = await import("node:fs");
    expect(existsSync(dir)).toBe(false);
  });
}

test("an etcd reached without TLS is warned about when it is off this host, not on loopback", () => {
  const store = { type: "etcd" as const, where: "--etcd-endpoint", tls: undefined, endpoints: ["http://10.0.0.1:2379", "http://127.0.0.1:2379", "http://[::1]:2379", "http://localhost:2379", "https://10.0.0.2:2379"] };
  expect(plaintextRemoteEtcd(store)).toEqual(["http://10.0.0.1:2379"]);
  expect(plaintextRemoteEtcd({ type: "embedded" })).toEqual([]);
});
