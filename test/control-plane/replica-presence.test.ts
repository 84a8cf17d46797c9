/**
 * Each control-plane replica keeps a record of itself in the store, on a lease: written at
 * start, written again if the lease lapsed, gone when the replica stops. A real SQLite store.
 */
import { afterAll, expect, test } from "bun:test";
import type { Logger } from "../../src/core/log.ts";
import { listReplicas, ReplicaPresence, replicasUnderOtherRoots, type ReplicaRecord } from "../../src/control-plane/replica-presence.ts";
import { openSqliteStore } from "../../src/store/index.ts";
import { tempDir } from "../helpers/cli.ts";
import { eventually } from "../helpers/wait.ts";

const tmp = tempDir("mesh-replica-presence-");
const store = openSqliteStore(tmp.path);
afterAll(() => {
  store.close();
  tmp.cleanup();
});
const warnings: string[] = [];
const log = { warn: (_o: unknown, msg: string) => void warnings.push(msg), info: () => {}, debug: () => {} } as unknown as Logger;

test("a replica's record is in the store while it runs, says what it signs under, and is gone once it stops", async () => {
  const a = new ReplicaPresence(store, { api: "127.0.0.1:8443", rootKeyId: "r1", intermediateKeyId: "i1" }, log, 60_000);
  const b = new ReplicaPresence(store, { api: "127.0.0.1:9443", rootKeyId: "r1", intermediateKeyId: "i2" }, log, 60_000);
  await Promise.all([a.start(), b.start()]);
  const listed = (await listReplicas(store)).sort((x, y) => x.api.localeCompare(y.api));
  expect(listed).toEqual([a.record, b.record]);
  expect(listed[0]).toMatchObject({ api: "127.0.0.1:8443", pid: process.pid, rootKeyId: "r1", intermediateKeyId: "i1" });
  expect(a.record.id).not.toBe(b.record.id);
  await a.stop();
  expect((await listReplicas(store)).map((r) => r.id)).toEqual([b.record.id]);
  await b.stop();
  expect(await listReplicas(store)).toEqual([]);
});

test("a record whose lease lapsed (the store was out of reach longer than it) is written again at the next tick", async () => {
  const p = new ReplicaPresence(store, { api: "127.0.0.1:8443", rootKeyId: "r1" }, log, 1_500);
  await p.start();
  const lease = (await store.get(`/mesh/replicas/${p.record.id}`))!.lease!;
  // As the store does when a lease is not kept alive in time: the lease and its record go.
  await store.revoke(lease);
  expect(await listReplicas(store)).toEqual([]);
  expect(await eventually(async () => (await listReplicas(store)).length === 1, 5_000, 50)).toBe(true);
  expect((await store.get(`/mesh/replicas/${p.record.id}`))!.lease).not.toBe(lease);
  await p.stop();
  expect(await listReplicas(store)).toEqual([]);
  expect(warnings).toEqual([]);
});

test("replicas under another root than the CA directory's are named, each with how to find it; the one already spoken of is not", () => {
  const replica = (id: string, pid: number, rootKeyId: string): ReplicaRecord => ({ id, host: "cp-host", pid, version: "0.1.0", startedAt: "2026-12-08T00:00:00.000Z", api: `10.0.0.${pid}:8443`, rootKeyId });
  const all = [replica("a", 1, "new"), replica("b", 2, "old"), replica("c", 3, "old")];
  expect(replicasUnderOtherRoots(all, "new")).toEqual([
    "the control plane replica on cp-host (pid 2, API 10.0.0.2:8443, up since 2026-12-08T00:00:00.000Z) signs under another root than the CA directory's: restart it, then let its sidecars renew (a replica that is gone leaves its record for 15 s)",
    "the control plane replica on cp-host (pid 3, API 10.0.0.3:8443, up since 2026-12-08T00:00:00.000Z) signs under another root than the CA directory's: restart it, then let its sidecars renew (a replica that is gone leaves its record for 15 s)",
  ]);
  expect(replicasUnderOtherRoots(all, "new", "b")).toHaveLength(1);
  expect(replicasUnderOtherRoots(all, "old")).toHaveLength(1);
});
