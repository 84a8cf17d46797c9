/**
 * Replicas on one etcd see each other (GET /v1/replicas), and a root rotation is not
 * completed while any of them still signs under the old root, whichever replica is asked:
 * real processes, a one-member etcd, two replicas sharing a CA directory.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import type { ReplicaRecord } from "../../src/control-plane/replica-presence.ts";
import { mesh, tempDir } from "../helpers/cli.ts";
import { startControlPlane, type TestControlPlane } from "../helpers/control-plane.ts";
import { etcdMissing, startEtcdCluster, type EtcdCluster } from "../helpers/etcd.ts";
import { stopAll } from "../helpers/procs.ts";

const tmp = tempDir("mesh-replica-records-");
let etcd: EtcdCluster;
let store: string[];

beforeAll(async () => {
  const missing = etcdMissing();
  if (missing) throw new Error(missing);
  etcd = await startEtcdCluster(1);
  store = ["--store", "etcd", "--etcd-endpoint", etcd.endpoints[0]!];
}, 30_000);
afterAll(async () => {
  await stopAll();
  await etcd?.stop();
  tmp.cleanup();
});

const replicasSeenBy = async (cp: TestControlPlane) => ((await (await cp.admin("GET", "/v1/replicas")).json()) as { items: ReplicaRecord[] }).items;
const check = (cp: TestControlPlane) => mesh("check", ...cp.adminFlags);
const complete = (cp: TestControlPlane) => mesh("ca", "rotate", "--ca-dir", cp.caDir, "--complete", ...cp.adminFlags);
async function stop(cp: TestControlPlane): Promise<void> {
  cp.proc.kill("SIGTERM");
  await cp.proc.exited;
}

test("a replica not restarted onto the new root blocks --complete, asked through the one that was; once it stops, its record is gone and nothing blocks", async () => {
  // The first creates the CA; the second shares its directory.
  let a = await startControlPlane(tmp.path, store, "a");
  const b = await startControlPlane(tmp.path, store, "b");
  const seen = await replicasSeenBy(a);
  expect(seen.map((r) => r.pid).sort()).toEqual([a.proc.pid, b.proc.pid].sort());
  expect(new Set(seen.map((r) => r.rootKeyId)).size).toBe(1);
  expect((await check(a)).out).toContain("PASS  2 control plane replicas alive, all signing under the CA directory's root");

  // A new root; only A is restarted onto it.
  expect((await mesh("ca", "rotate", "--ca-dir", a.caDir, "--root")).code).toBe(0);
  await stop(a);
  a = await startControlPlane(tmp.path, store, "a");
  const records = await replicasSeenBy(a);
  expect(records.map((r) => r.pid).sort()).toEqual([a.proc.pid, b.proc.pid].sort());
  expect(new Set(records.map((r) => r.rootKeyId)).size).toBe(2);

  // Asked through A (which signs under the new root), --complete names B, and writes nothing.
  const bLine = `the control plane replica on `;
  const refused = await complete(a);
  expect(refused.code).toBe(1);
  expect(refused.err).toMatch(new RegExp(`${bLine}\\S+ \\(pid ${b.proc.pid}, API 127\\.0\\.0\\.1:${b.ports.api}, up since [^)]+\\) signs under another root than the CA directory's: restart it`));
  expect(refused.err).not.toContain(`pid ${a.proc.pid}`);
  expect((await check(a)).out).toMatch(new RegExp(`FAIL  ${bLine}\\S+ \\(pid ${b.proc.pid},`));
  // Asked through B, it says B signs under the old root, once.
  const viaB = await complete(b);
  expect(viaB.code).toBe(1);
  expect(viaB.err).toContain("still signs under the old root");
  expect(viaB.err).not.toContain(`pid ${b.proc.pid}`);

  // B stops (as its restart begins): its record goes with it, and nothing else stands in the way.
  await stop(b);
  expect((await replicasSeenBy(a)).map((r) => r.pid)).toEqual([a.proc.pid]);
  const done = await complete(a);
  expect({ code: done.code, err: done.err }).toEqual({ code: 0, err: "" });
}, 60_000);
