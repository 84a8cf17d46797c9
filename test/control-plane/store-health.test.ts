/**
 * The store's health in /v1/status and `mesh check`: etcd's alarms and the last store error.
 * The pieces first (the monitor, the error-reporting store, check's lines, the 507 answer),
 * then real control planes: one on the embedded store, one on an etcd that stops answering.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Hono } from "hono";
import { join } from "node:path";
import { storeLines } from "../../src/cli/check-store.ts";
import { onError } from "../../src/control-plane/api/http.ts";
import { RECENT_STORE_ERROR_MS, StoreHealthMonitor, type AlarmSource } from "../../src/control-plane/store-health.ts";
import type { AlarmCheck } from "../../src/store/etcd-health.ts";
import { reportingErrors } from "../../src/store/error-reporting.ts";
import { StoreError } from "../../src/store/errors.ts";
import { openSqliteStore } from "../../src/store/sqlite.ts";
import { mesh, tempDir } from "../helpers/cli.ts";
import { startControlPlane, type TestControlPlane } from "../helpers/control-plane.ts";
import { etcdMissing, startEtcdCluster, type EtcdCluster } from "../helpers/etcd.ts";
import { stopAll } from "../helpers/procs.ts";

const T0 = Date.parse("2030-01-01T00:00:00Z");
const fixedAlarms = (check: AlarmCheck | undefined): AlarmSource => ({ check: async () => check!, current: check });

describe("StoreHealthMonitor", () => {
  test("the embedded store: healthy until an error, unhealthy while it is recent, the error kept after", () => {
    let now = T0;
    const health = new StoreHealthMonitor(undefined, () => now);
    expect(health.report()).toEqual({ healthy: true });
    health.record(new StoreError("unavailable", "etcd: no member answered"));
    now += 1_000;
    expect(health.report()).toEqual({ healthy: false, lastError: { code: "unavailable", message: "etcd: no member answered", at: new Date(T0).toISOString(), ageMs: 1_000 } });
    now = T0 + RECENT_STORE_ERROR_MS;
    expect(health.report()).toMatchObject({ healthy: true, lastError: { code: "unavailable" } });
  });

  test("errors not of the store's own keep their code (bun:sqlite's) or their name", () => {
    const health = new StoreHealthMonitor(undefined, () => T0);
    health.record(Object.assign(new Error("database or disk is full"), { code: "SQLITE_FULL" }));
    expect(health.report().lastError).toMatchObject({ code: "SQLITE_FULL", message: "database or disk is full" });
    health.record(new TypeError("boom"));
    expect(health.report().lastError).toMatchObject({ code: "TypeError" });
  });

  test("etcd: an alarm, or alarms that could not be read, make the store unhealthy", () => {
    const at = new Date(T0).toISOString();
    expect(new StoreHealthMonitor(fixedAlarms({ alarms: [], checkedAt: T0 }), () => T0).report()).toEqual({ healthy: true, alarms: [], alarmsCheckedAt: at });
    expect(new StoreHealthMonitor(fixedAlarms({ alarms: ["NOSPACE"], checkedAt: T0 }), () => T0).report()).toEqual({ healthy: false, alarms: ["NOSPACE"], alarmsCheckedAt: at });
    expect(new StoreHealthMonitor(fixedAlarms({ alarms: [], checkedAt: T0, error: "timed out" }), () => T0).report()).toEqual({ healthy: false, alarms: [], alarmsCheckedAt: at, alarmCheckError: "timed out" });
  });
});

describe("reportingErrors", () => {
  test("reports the failures callers meet, not the answers the protocol gives, and passes everything else through", async () => {
    const tmp = tempDir();
    const seen: unknown[] = [];
    const store = reportingErrors(openSqliteStore(join(tmp.path, "store")), (err) => seen.push(err));
    try {
      expect(await store.put("k", "v")).toBeGreaterThan(0);
      expect((await store.get("k"))?.value).toBe("v");
      const cancel = store.watch("k", { onEvent: () => {}, onError: () => {} });
      expect(typeof cancel).toBe("function");
      cancel();
      await expect(store.keepAlive("404")).rejects.toMatchObject({ code: "lease-not-found" });
      expect(seen).toEqual([]);
      await expect(store.grant(-1)).rejects.toMatchObject({ code: "rejected" });
      expect(seen).toHaveLength(1);
      expect((seen[0] as StoreError).message).toContain("lease TTL must be a positive number");
    } finally {
      await store.close();
      tmp.cleanup();
    }
    await expect(store.get("k")).rejects.toMatchObject({ code: "closed" });
    expect(seen).toHaveLength(1);
  });
});

describe("mesh check's store lines", () => {
  const ago = (ms: number) => ({ code: "unavailable", message: "etcd: no member answered /v3/kv/txn within 15000 ms", at: "2030-01-01T00:00:00.000Z", ageMs: ms });

  test("NOSPACE fails, naming the etcdctl commands that free space", () => {
    const [line, ...rest] = storeLines("etcd", { healthy: false, alarms: ["NOSPACE"] });
    expect(rest).toEqual([]);
    expect(line!.ok).toBe(false);
    expect(line!.text).toContain("NOSPACE alarm is raised: etcd is out of space and refuses every write");
    for (const command of ["etcdctl compact", "etcdctl defrag", "etcdctl alarm disarm"]) expect(line!.fix).toContain(command);
  });

  test("an unreadable alarm list and a recent store error fail; an old error passes, named", () => {
    const failing = storeLines("etcd", { healthy: false, alarms: [], alarmCheckError: "etcd http://10.0.0.1:2379/v3/maintenance/alarm: TimeoutError", lastError: ago(30_000) });
    expect(failing.map((l) => [l.ok, l.text])).toEqual([
      [false, "etcd's alarms could not be read: etcd http://10.0.0.1:2379/v3/maintenance/alarm: TimeoutError"],
      [false, "etcd store failed a request 30 s ago (2030-01-01T00:00:00.000Z): unavailable: etcd: no member answered /v3/kv/txn within 15000 ms"],
    ]);
    expect(failing[1]!.fix).toContain("etcdctl endpoint health");
    const noSpace = storeLines("etcd", { healthy: false, alarms: [], lastError: { ...ago(1_000), code: "no-space" } });
    expect(noSpace[0]!.fix).toContain("etcdctl alarm disarm");
    expect(storeLines("etcd", { healthy: true, alarms: [], lastError: ago(RECENT_STORE_ERROR_MS) })).toEqual([{ ok: true, text: "etcd store: no alarms, no errors in the last 5 minutes (last at 2030-01-01T00:00:00.000Z)" }]);
  });

  test("a replica whose view stopped following the store fails its own line, with since when and why", () => {
    const stale = { synced: false, revision: 41, staleSince: "2030-01-01T00:00:00.000Z", failedRelists: 3, error: "etcd: no member answered" };
    const [line] = storeLines("etcd", { healthy: true, alarms: [] }, stale);
    expect(line).toMatchObject({ ok: false, text: "this replica's view of the store is stale since 2030-01-01T00:00:00.000Z (3 re-lists failed: etcd: no member answered); its sidecars get no changes meanwhile" });
    expect(storeLines("etcd", { healthy: true, alarms: [] }, { synced: true, revision: 42, failedRelists: 0 })).toEqual([{ ok: true, text: "etcd store: no alarms, no errors in the last 5 minutes" }]);
    // A watch that lost its connection (no re-list failed yet): the same line, without a count of re-lists.
    const reconnecting = { synced: false, revision: 41, staleSince: "2030-01-01T00:00:00.000Z", failedRelists: 0, error: "its store watch lost its connection: stream closed by the member" };
    expect(storeLines("etcd", { healthy: true, alarms: [] }, reconnecting)[0]!.text).toBe(
      "this replica's view of the store is stale since 2030-01-01T00:00:00.000Z (its store watch lost its connection: stream closed by the member); its sidecars get no changes meanwhile",
    );
  });

  test("the embedded store: one line; nothing from a control plane that does not report store health", () => {
    expect(storeLines("embedded", { healthy: true })).toEqual([{ ok: true, text: "embedded store: no errors in the last 5 minutes" }]);
    expect(storeLines("embedded", { healthy: false, lastError: { ...ago(RECENT_STORE_ERROR_MS - 1), code: "SQLITE_FULL" } })[0]).toMatchObject({ ok: false, fix: expect.stringContaining("disk") });
    expect(storeLines("embedded", undefined)).toEqual([]);
  });
});

describe("the API's answer to a store error", () => {
  const answer = async (err: Error) => {
    const app = new Hono();
    app.onError(onError);
    app.get("/", () => {
      throw err;
    });
    const res = await app.request("/");
    return { status: res.status, error: ((await res.json()) as { error: string }).error };
  };

  test("out of space is 507, names the cause and the remedy; an outage stays 503", async () => {
    const full = await answer(new StoreError("no-space", "etcd: etcdserver: mvcc: database space exceeded"));
    expect(full.status).toBe(507);
    expect(full.error).toStartWith("store out of space, nothing written: etcd: etcdserver: mvcc: database space exceeded; free etcd's space");
    expect(full.error).toContain("etcdctl alarm disarm");
    expect((await answer(new StoreError("unavailable", "etcd: no member answered"))).status).toBe(503);
  });
});

describe("a control plane's status and check", () => {
  const tmp = tempDir();
  afterAll(async () => {
    await stopAll();
    tmp.cleanup();
  });
  const check = (cp: TestControlPlane, name: string) => mesh("check", "--admin-url", `http://127.0.0.1:${cp.ports.admin}`, "--admin-token-file", join(tmp.path, `${name}-data`, "admin-token"));
  const storeHealthOf = async (cp: TestControlPlane) => ((await (await cp.admin("GET", "/v1/status")).json()) as { storeHealth: Record<string, unknown> }).storeHealth;

  test("the embedded store reports healthy, and check passes its line", async () => {
    const cp = await startControlPlane(tmp.path, [], "embedded");
    expect(await storeHealthOf(cp)).toEqual({ healthy: true });
    expect((await check(cp, "embedded")).out).toContain("PASS  embedded store: no errors in the last 5 minutes");
  }, 30_000);

  const missing = etcdMissing();
  describe.skipIf(missing !== undefined)("on etcd", () => {
    let etcd: EtcdCluster;
    let cp: TestControlPlane;
    beforeAll(async () => {
      etcd = await startEtcdCluster(1);
      cp = await startControlPlane(tmp.path, ["--store", "etcd", "--etcd-endpoint", etcd.endpoints[0]!], "on-etcd");
    }, 30_000);
    afterAll(async () => {
      etcd?.resume(0);
      await stopAll();
      await etcd?.stop();
    });

    test("no alarms: healthy, and check passes its line", async () => {
      expect(await storeHealthOf(cp)).toMatchObject({ healthy: true, alarms: [] });
      expect((await check(cp, "on-etcd")).out).toContain("PASS  etcd store: no alarms, no errors in the last 5 minutes");
    }, 20_000);

    test("an etcd that stops answering delays /v1/status by at most the alarm check's timeout, and the status names it", async () => {
      await Bun.sleep(3_000); // past the cached read
      etcd.pause(0);
      try {
        const t0 = performance.now();
        const health = await storeHealthOf(cp);
        expect(performance.now() - t0).toBeLessThan(2_500);
        expect(health).toMatchObject({ healthy: false, alarmCheckError: expect.stringContaining(etcd.endpoints[0]!) });
      } finally {
        etcd.resume(0);
      }
    }, 20_000);

    test("an etcd that stops answering: check fails, saying the join tokens and proxies could not be read (not that none are there), in one store retry window", async () => {
      etcd.pause(0);
      try {
        const t0 = performance.now();
        const r = await check(cp, "on-etcd");
        const seconds = (performance.now() - t0) / 1000;
        expect(r.code).toBe(1);
        expect(r.out).toMatch(/FAIL {2}join tokens could not be read \(\/v1\/join-tokens answered 503\)/);
        expect(r.out).toMatch(/FAIL {2}proxies could not be read \(\/v1\/proxies answered 503\)/);
        expect(r.out).not.toContain("no proxies connected");
        // Asked one after the other, the two reads took two windows of 15 s.
        expect(seconds).toBeLessThan(28);
      } finally {
        etcd.resume(0);
      }
    }, 60_000);
  });
});
