/** The etcd store against a real single-member etcd: the shared conformance suite, then etcd's own rules. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { StoreError } from "../../src/store/errors.ts";
import { EtcdStore } from "../../src/store/etcd.ts";
import { etcdInstalled, MAX_TXN_OPS, pidAlive, startEtcdCluster, type EtcdCluster } from "../helpers/etcd.ts";
import { Recorder, storeConformance, until } from "./conformance.ts";


if (etcdInstalled("the etcd store tests")) {
  let cluster: EtcdCluster;
  beforeAll(async () => {
    cluster = await startEtcdCluster(1);
  });
  afterAll(async () => {
    await cluster?.stop();
  });

  describe("etcd store: conformance", () => {
    // etcd grants whole seconds, at least 1 s with the test cluster's raft timings, and its
    // lessor looks for lapsed leases every 500 ms.
    storeConformance(() => ({ open: async () => new EtcdStore({ endpoints: cluster.endpoints }), shortTtlMs: 1_000, expirySlackMs: 700 }));
  });

  describe("etcd store: etcd specifics", () => {
    test("lease TTLs are rounded up to whole seconds and to etcd's minimum", async () => {
      const s = new EtcdStore({ endpoints: cluster.endpoints });
      const tiny = await s.grant(1);
      const odd = await s.grant(1_500);
      expect(tiny.ttlMs).toBe(1_000);
      expect(odd.ttlMs).toBe(2_000);
      await s.revoke(tiny.id);
      await s.revoke(odd.id);
      await s.close();
    });

    test("lease IDs beyond 2^53 survive the round trip as strings", async () => {
      const s = new EtcdStore({ endpoints: cluster.endpoints });
      const lease = await s.grant(5_000);
      expect(lease.id).toMatch(/^\d+$/);
      await s.put("big-lease/k", "v", { lease: lease.id });
      expect((await s.get("big-lease/k"))?.lease).toBe(lease.id);
      await s.revoke(lease.id);
      expect(await s.get("big-lease/k")).toBeUndefined();
      await s.close();
    });

    test("a member that refuses connections is skipped; no member at all is `unavailable`", async () => {
      const dead = `http://127.0.0.1:1`;
      const s = new EtcdStore({ endpoints: [dead, ...cluster.endpoints] });
      await s.put("skip/k", "v");
      expect((await s.get("skip/k"))?.value).toBe("v");
      await s.close();
      const none = new EtcdStore({ endpoints: [dead], retryForMs: 300 });
      const err = await none.get("k").catch((e: unknown) => e);
      expect(err).toBeInstanceOf(StoreError);
      expect((err as StoreError).code).toBe("unavailable");
      expect((err as StoreError).message).toContain("127.0.0.1:1");
      await none.close();
    });

    test("a conditional write whose answer was lost is resolved, not reported as a lost race", async () => {
      const real = cluster.endpoints[0]!;
      const flaky = losingAnswers(real);
      try {
        const endpoints = [flaky.url, real];
        const direct = new EtcdStore({ endpoints: [real] });
        const claim = async (key: string, value: string) => {
          const s = new EtcdStore({ endpoints }); // starts on the flaky member each time
          try {
            return await s.putIfAbsent(key, value);
          } finally {
            await s.close();
          }
        };

        flaky.mode = "apply-then-fail"; // ours was applied: the retry's compare fails on our own value
        expect(await claim("lost/a", "mine")).toBe(true);
        flaky.mode = "fail"; // not applied, key still absent: the retry applies it
        expect(await claim("lost/b", "mine")).toBe(true);
        await direct.put("lost/c", "theirs");
        flaky.mode = "fail"; // not applied and someone else holds the key
        expect(await claim("lost/c", "mine")).toBe(false);
        expect((await direct.list("lost/")).kvs.map((kv) => kv.value)).toEqual(["mine", "mine", "theirs"]);
        await direct.close();
      } finally {
        flaky.stop();
      }
    });

    test("a commit whose answer was lost is resolved by its guard; one never resolved is `unavailable`, outcome unknown", async () => {
      const real = cluster.endpoints[0]!;
      const flaky = losingAnswers(real);
      const direct = new EtcdStore({ endpoints: [real] });
      const commit = async (endpoints: string[], guard: number, value: string) => {
        const s = new EtcdStore({ endpoints }); // starts on the flaky member each time
        try {
          return await s.commit({ key: "lost-commit/guard", modRevision: guard }, [{ put: "lost-commit/k", value }]);
        } finally {
          await s.close();
        }
      };
      const guardAt = async () => (await direct.get("lost-commit/guard"))?.modRevision ?? 0;
      try {
        const endpoints = [flaky.url, real];
        flaky.mode = "apply-then-fail"; // ours was applied: the retry's compare fails on our own guard value
        expect(await commit(endpoints, 0, "first")).toBe(true);
        flaky.mode = "fail"; // not applied, guard unmoved: the retry applies it
        expect(await commit(endpoints, await guardAt(), "second")).toBe(true);
        const stale = await guardAt();
        await direct.commit({ key: "lost-commit/guard", modRevision: stale }, [{ put: "lost-commit/k", value: "theirs" }]);
        flaky.mode = "fail"; // not applied, and another commit moved the guard
        expect(await commit(endpoints, stale, "mine")).toBe(false);
        expect((await direct.get("lost-commit/k"))?.value).toBe("theirs");
        flaky.mode = "always-fail"; // every answer lost
        const err = (await commit([flaky.url], await guardAt(), "unknown").catch((e: unknown) => e)) as StoreError;
        expect(err.code).toBe("unavailable");
        expect(err.outcomeUnknown).toBe(true);
        expect(err.message).toContain("may or may not have been applied");
      } finally {
        await direct.close();
        flaky.stop();
      }
    });

    test("a commit past etcd's limits is `too-large` at once, nothing written, naming the limits", async () => {
      const s = new EtcdStore({ endpoints: cluster.endpoints });
      const guard = { key: "too-large/guard", modRevision: 0 };
      const t0 = performance.now();
      // The guard makes MAX_TXN_OPS + 1 operations.
      const many = (await s.commit(guard, Array.from({ length: MAX_TXN_OPS }, (_, i) => ({ put: `too-large/ops/${i}`, value: "v" }))).catch((e: unknown) => e)) as StoreError;
      expect(many.code).toBe("too-large");
      expect(many.message).toContain("too many operations in txn request");
      expect(many.message).toContain("--max-txn-ops");
      // Past --max-request-bytes (1.5 MiB) etcd refuses the proposal; past it and gRPC's 512 KiB allowance, gRPC refuses it on receipt.
      for (const chars of [1_700_000, 2_500_000]) {
        const big = (await s.commit(guard, [{ put: "too-large/big", value: "x".repeat(chars) }]).catch((e: unknown) => e)) as StoreError;
        expect(big.code).toBe("too-large");
        expect(big.message).toContain("--max-request-bytes");
      }
      expect(performance.now() - t0).toBeLessThan(3_000);
      expect((await s.list("too-large/")).kvs).toEqual([]);
      await s.close();
    });

    test("cancelled watches and closed stores leave no watch behind on the member", async () => {
      const watchers = async () => {
        const text = await (await fetch(`${cluster.endpoints[0]}/metrics`)).text();
        return Number(/^etcd_debugging_mvcc_watcher_total (\d+)$/m.exec(text)?.[1]);
      };
      const baseline = await watchers();
      const s = new EtcdStore({ endpoints: cluster.endpoints });
      const recs = Array.from({ length: 4 }, () => new Recorder());
      const cancels = recs.map((r, i) => s.watch(`leak/${i}/`, r));
      await until(async () => (await watchers()) === baseline + 4, 5_000, () => "watches not established");
      cancels.slice(0, 2).forEach((c) => c());
      await until(async () => (await watchers()) === baseline + 2, 5_000, () => "cancelled watches still open");
      await s.close();
      await until(async () => (await watchers()) === baseline, 5_000, () => "a closed store's watches still open");
      expect(recs.map((r) => r.ended?.code)).toEqual([undefined, undefined, "closed", "closed"]);
    });

    test("a request etcd refuses is `rejected` and not retried", async () => {
      const s = new EtcdStore({ endpoints: cluster.endpoints });
      const err = await s.put("", "no empty keys").catch((e: unknown) => e);
      expect((err as StoreError).code).toBe("rejected");
      await s.close();
      // Something that is not an etcd ≥ 3.4 gateway fails at once, naming the URL.
      const other = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response("404 page not found", { status: 404 }) });
      const wrong = new EtcdStore({ endpoints: [`http://127.0.0.1:${other.port}`] });
      const t0 = performance.now();
      const notEtcd = (await wrong.get("k").catch((e: unknown) => e)) as StoreError;
      expect(notEtcd.code).toBe("rejected");
      expect(notEtcd.message).toContain(`127.0.0.1:${other.port}/v3/kv/range`);
      expect(performance.now() - t0).toBeLessThan(1_000);
      other.stop(true);
    });
  });

  test("every etcd process started here is stopped", async () => {
    await cluster.stop();
    for (const m of cluster.members) expect(pidAlive(m.pid)).toBe(false);
  });
}

type LostAnswer = "apply-then-fail" | "fail" | "always-fail" | "pass";

/**
 * A stand-in for the member at `real` that passes everything on but txns: in mode "fail" it
 * answers the next with a timeout instead of applying it, in "apply-then-fail" after applying
 * it (both once, then "pass"), in "always-fail" every one, unapplied.
 */
function losingAnswers(real: string): { mode: LostAnswer; url: string; stop(): void } {
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    async fetch(req) {
      const url = new URL(req.url);
      const body = await req.text();
      const forward = () => fetch(real + url.pathname, { method: "POST", body });
      if (url.pathname !== "/v3/kv/txn" || stand.mode === "pass") return forward();
      if (stand.mode === "apply-then-fail") await forward();
      if (stand.mode !== "always-fail") stand.mode = "pass";
      return Response.json({ error: "etcdserver: request timed out", code: 14, message: "etcdserver: request timed out" }, { status: 503 });
    },
  });
  const stand = { mode: "pass" as LostAnswer, url: `http://127.0.0.1:${server.port}`, stop: () => server.stop(true) };
  return stand;
}
