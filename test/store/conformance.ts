/**
 * The behaviour every Store implementation owes its callers, run unchanged against the
 * embedded store and against etcd. Each test works under its own key prefix, so stores
 * sharing one etcd cluster do not see each other's keys.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { StoreError } from "../../src/store/errors.ts";
import type { Store, WatchEvent } from "../../src/store/store.ts";

export interface StoreHarness {
  /** A store for one test; closed by the suite. */
  open(): Promise<Store>;
  /** A lease TTL the store grants as is (etcd: whole seconds, at least its minimum). */
  shortTtlMs: number;
  /** How long after its TTL a lapsed lease's keys may linger (etcd checks expiry every 500 ms). */
  expirySlackMs: number;
}

let seq = 0;
const unique = (name: string) => `conf-${Date.now().toString(36)}-${seq++}-${name}/`;

/** Collects a watch's events and its end, and waits for a number of them. */
export class Recorder {
  events: WatchEvent[] = [];
  ended: StoreError | undefined;
  onEvent = (ev: WatchEvent) => void this.events.push(ev);
  onError = (err: StoreError) => void (this.ended = err);

  async waitFor(n: number, timeoutMs = 10_000): Promise<WatchEvent[]> {
    await until(() => this.events.length >= n, timeoutMs, () => `${this.events.length}/${n} events: ${JSON.stringify(this.events)}`);
    return this.events;
  }

  async waitEnded(timeoutMs = 10_000): Promise<StoreError> {
    await until(() => this.ended !== undefined, timeoutMs, () => "watch did not end");
    return this.ended!;
  }
}

export async function until(cond: () => boolean | Promise<boolean>, timeoutMs: number, what: () => string): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!(await cond())) {
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms: ${what()}`);
    await Bun.sleep(10);
  }
}

async function storeError(p: Promise<unknown>): Promise<StoreError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof StoreError) return err;
    throw err;
  }
  throw new Error("expected a StoreError");
}

const brief = (evs: WatchEvent[]) => evs.map((e) => (e.type === "put" ? `put ${e.key}=${e.value}` : `delete ${e.key}`));

export function storeConformance(harness: () => StoreHarness): void {
  let h: StoreHarness;
  let s: Store;
  beforeAll(async () => {
    h = harness();
    s = await h.open();
  });
  afterAll(async () => {
    await s?.close();
  });

  describe("keys and revisions", () => {
    test("put, get, update, delete track revisions and versions", async () => {
      const p = unique("kv");
      const r1 = await s.put(p + "a", "1");
      expect(await s.get(p + "a")).toEqual({ key: p + "a", value: "1", createRevision: r1, modRevision: r1, version: 1 });
      const r2 = await s.put(p + "a", "2");
      expect(r2).toBeGreaterThan(r1);
      expect(await s.get(p + "a")).toEqual({ key: p + "a", value: "2", createRevision: r1, modRevision: r2, version: 2 });
      expect(await s.delete(p + "a")).toBe(true);
      expect(await s.delete(p + "a")).toBe(false);
      expect(await s.get(p + "a")).toBeUndefined();
      const r3 = await s.put(p + "a", "3");
      expect(await s.get(p + "a")).toMatchObject({ createRevision: r3, version: 1 });
      expect(await s.revision()).toBeGreaterThanOrEqual(r3);
    });

    test("list returns exactly the prefix, sorted, with the revision it reflects", async () => {
      const p = unique("list");
      await s.put(p + "b", "2");
      await s.put(p + "a", "1");
      await s.put(p + "c/d", "3");
      const last = await s.put(p.slice(0, -1) + "0", "sibling sorting right after the prefix");
      await s.put(p.slice(0, -1), "the prefix without its slash");
      const l = await s.list(p);
      expect(l.kvs.map((kv) => [kv.key, kv.value])).toEqual([[p + "a", "1"], [p + "b", "2"], [p + "c/d", "3"]]);
      expect(l.revision).toBeGreaterThan(last);
      expect((await s.list(unique("empty"))).kvs).toEqual([]);
    });

    test("values and keys are text: empty, unicode, JSON", async () => {
      const p = unique("text");
      const json = JSON.stringify({ name: "zürich 🚀", n: [1, 2] });
      await s.put(p + "empty", "");
      await s.put(p + "ü/🚀", json);
      expect((await s.get(p + "empty"))?.value).toBe("");
      expect((await s.get(p + "ü/🚀"))?.value).toBe(json);
      expect((await s.list(p + "ü/")).kvs.map((kv) => kv.key)).toEqual([p + "ü/🚀"]);
    });

    test("the revision only grows, and failed conditional writes do not move it", async () => {
      const p = unique("rev");
      const before = await s.revision();
      await s.put(p + "a", "1");
      const after = await s.revision();
      expect(after).toBeGreaterThan(before);
      expect(await s.putIfAbsent(p + "a", "2")).toBe(false);
      expect(await s.putIfVersion(p + "a", "2", 1)).toBe(false);
      expect(await s.delete(p + "missing")).toBe(false);
      expect(await s.revision()).toBe(after);
    });
  });

  describe("compare-and-swap", () => {
    test("putIfAbsent creates once and never overwrites", async () => {
      const p = unique("cas");
      expect(await s.putIfAbsent(p + "token", "first")).toBe(true);
      expect(await s.putIfAbsent(p + "token", "second")).toBe(false);
      expect((await s.get(p + "token"))?.value).toBe("first");
    });

    test("of many concurrent claims of a single-use token exactly one wins", async () => {
      const p = unique("claim");
      const results = await Promise.all(Array.from({ length: 20 }, (_, i) => s.putIfAbsent(p + "jti", `claimant-${i}`)));
      expect(results.filter(Boolean)).toHaveLength(1);
      expect((await s.get(p + "jti"))?.value).toBe(`claimant-${results.indexOf(true)}`);
    });

    test("putIfVersion writes only over the revision it read; 0 means absent", async () => {
      const p = unique("ver");
      expect(await s.putIfVersion(p + "k", "v1", 0)).toBe(true);
      const kv = (await s.get(p + "k"))!;
      expect(await s.putIfVersion(p + "k", "x", 0)).toBe(false);
      expect(await s.putIfVersion(p + "k", "v2", kv.modRevision)).toBe(true);
      expect(await s.putIfVersion(p + "k", "stale", kv.modRevision)).toBe(false);
      expect((await s.get(p + "k"))?.value).toBe("v2");
    });

    test("concurrent read-modify-write loses no update", async () => {
      const key = unique("counter") + "n";
      await s.put(key, "0");
      const increment = async () => {
        for (;;) {
          const kv = (await s.get(key))!;
          if (await s.putIfVersion(key, String(Number(kv.value) + 1), kv.modRevision)) return;
        }
      };
      await Promise.all(Array.from({ length: 5 }, async () => {
        for (let i = 0; i < 8; i++) await increment();
      }));
      expect((await s.get(key))?.value).toBe("40");
    });
  });

  describe("guarded commit", () => {
    test("commit writes every op and the guard at one revision, only over the guard's revision; 0 means absent", async () => {
      const p = unique("commit");
      const guard = p + "guard";
      await s.put(p + "old", "x");
      expect(await s.commit({ key: guard, modRevision: 0 }, [{ put: p + "a", value: "1" }, { put: p + "b", value: "2" }, { delete: p + "old" }, { delete: p + "never-was" }])).toBe(true);
      const first = await s.list(p);
      expect(first.kvs.map((kv) => [kv.key, kv.key === guard ? "(guard)" : kv.value])).toEqual([[p + "a", "1"], [p + "b", "2"], [guard, "(guard)"]]);
      const rev = first.kvs[0]!.modRevision;
      expect(first.kvs.map((kv) => kv.modRevision)).toEqual([rev, rev, rev]);
      // A guard that moved, or is no longer absent: refused, nothing written, the revision unmoved.
      expect(await s.commit({ key: guard, modRevision: 0 }, [{ put: p + "a", value: "lost" }])).toBe(false);
      expect(await s.commit({ key: guard, modRevision: rev - 1 }, [{ delete: p + "b" }])).toBe(false);
      expect(await s.revision()).toBe(first.revision);
      expect(await s.commit({ key: guard, modRevision: rev }, [{ put: p + "a", value: "3" }, { delete: p + "b" }])).toBe(true);
      const second = await s.list(p);
      expect(second.kvs.map((kv) => kv.key)).toEqual([p + "a", guard]);
      expect((await s.get(p + "a"))?.value).toBe("3");
      // Each commit leaves the guard a value of its own.
      expect(second.kvs[1]!.value).not.toBe(first.kvs[2]!.value);
      // No ops: the guard alone moves.
      expect(await s.commit({ key: guard, modRevision: second.kvs[1]!.modRevision }, [])).toBe(true);
      expect((await s.get(guard))!.modRevision).toBeGreaterThan(second.kvs[1]!.modRevision);
    });

    test("a watcher sees a commit's writes and its guard at one revision", async () => {
      const p = unique("commit-watch");
      // From a known revision: a watch without one sees only what comes after it is established, which may be after the commit.
      const { revision } = await s.list(p);
      const rec = new Recorder();
      const cancel = s.watch(p, rec, revision + 1);
      try {
        expect(await s.commit({ key: p + "guard", modRevision: 0 }, [{ put: p + "x", value: "1" }, { put: p + "y", value: "2" }])).toBe(true);
        const evs = await rec.waitFor(3);
        expect(new Set(evs.map((e) => e.revision)).size).toBe(1);
        expect(evs.map((e) => e.key).sort()).toEqual([p + "guard", p + "x", p + "y"]);
      } finally {
        cancel();
      }
    });

    test("of concurrent commits over one guard revision exactly one is written", async () => {
      const p = unique("commit-race");
      await s.put(p + "guard", "start");
      const at = (await s.get(p + "guard"))!.modRevision;
      const results = await Promise.all(Array.from({ length: 10 }, (_, i) => s.commit({ key: p + "guard", modRevision: at }, [{ put: p + "winner", value: `writer-${i}` }])));
      expect(results.filter(Boolean)).toHaveLength(1);
      expect((await s.get(p + "winner"))?.value).toBe(`writer-${results.indexOf(true)}`);
    });

    test("a key written twice in one commit (the guard included) is refused, nothing written", async () => {
      const p = unique("commit-twice");
      const twice = await storeError(s.commit({ key: p + "guard", modRevision: 0 }, [{ put: p + "k", value: "1" }, { delete: p + "k" }]));
      expect(twice.code).toBe("rejected");
      expect(twice.message).toContain(p + "k");
      expect((await storeError(s.commit({ key: p + "guard", modRevision: 0 }, [{ put: p + "guard", value: "1" }]))).code).toBe("rejected");
      expect((await s.list(p)).kvs).toEqual([]);
    });
  });

  describe("leases", () => {
    test("a revoked lease takes its keys; its id is then unknown", async () => {
      const p = unique("revoke");
      const lease = await s.grant(30_000);
      expect(lease.ttlMs).toBeGreaterThanOrEqual(30_000);
      await s.put(p + "a", "1", { lease: lease.id });
      await s.put(p + "b", "2", { lease: lease.id });
      await s.put(p + "keep", "3");
      expect((await s.get(p + "a"))?.lease).toBe(lease.id);
      expect(await s.keepAlive(lease.id)).toBe(lease.ttlMs);
      await s.revoke(lease.id);
      expect((await s.list(p)).kvs.map((kv) => kv.key)).toEqual([p + "keep"]);
      expect((await storeError(s.keepAlive(lease.id))).code).toBe("lease-not-found");
      expect((await storeError(s.put(p + "c", "x", { lease: lease.id }))).code).toBe("lease-not-found");
      expect((await storeError(s.putIfAbsent(p + "c", "x", { lease: lease.id }))).code).toBe("lease-not-found");
      await s.revoke(lease.id); // again: not an error
      expect(await s.get(p + "c")).toBeUndefined();
    });

    test("a lapsed lease's keys vanish; a kept-alive lease's stay", async () => {
      const p = unique("expire");
      const lapsing = await s.grant(h.shortTtlMs);
      const kept = await s.grant(h.shortTtlMs);
      const start = performance.now();
      await s.put(p + "lapsing/1", "a", { lease: lapsing.id });
      await s.put(p + "lapsing/2", "b", { lease: lapsing.id });
      await s.put(p + "kept", "c", { lease: kept.id });
      await s.put(p + "plain", "d");
      const rec = new Recorder();
      const cancel = s.watch(p, rec, (await s.revision()) + 1);
      const heartbeat = setInterval(() => void s.keepAlive(kept.id), kept.ttlMs / 4);
      try {
        await until(async () => (await s.get(p + "lapsing/1")) === undefined, lapsing.ttlMs + h.expirySlackMs + 2_000, () => "lapsing key still there");
        expect(performance.now() - start).toBeGreaterThanOrEqual(lapsing.ttlMs - 50);
        expect(await s.get(p + "lapsing/2")).toBeUndefined();
        // Outlive the kept lease's own TTL: only the heartbeat holds it.
        await Bun.sleep(Math.max(0, start + kept.ttlMs + h.expirySlackMs - performance.now()));
        expect((await s.list(p)).kvs.map((kv) => kv.key)).toEqual([p + "kept", p + "plain"]);
        expect((await storeError(s.keepAlive(lapsing.id))).code).toBe("lease-not-found");
        expect(brief(await rec.waitFor(2))).toEqual([`delete ${p}lapsing/1`, `delete ${p}lapsing/2`]);
        expect(rec.events[0]!.revision).toBe(rec.events[1]!.revision); // one revision, as one transaction
      } finally {
        clearInterval(heartbeat);
        cancel();
        await s.revoke(kept.id);
      }
    });
  });

  describe("watch", () => {
    test("list, then watch from list.revision + 1: every later change, in order, only under the prefix", async () => {
      const p = unique("watch");
      await s.put(p + "before", "x");
      const { revision } = await s.list(p);
      const rec = new Recorder();
      const cancel = s.watch(p, rec, revision + 1);
      const r1 = await s.put(p + "a", "1");
      await s.put(unique("elsewhere") + "a", "not mine");
      const r2 = await s.put(p + "a", "2");
      const r3 = (await s.delete(p + "before")) && (await s.revision());
      const evs = await rec.waitFor(3);
      expect(brief(evs)).toEqual([`put ${p}a=1`, `put ${p}a=2`, `delete ${p}before`]);
      expect(evs.map((e) => e.revision)).toEqual([r1, r2, r3 as number]);
      expect(evs[1]).toMatchObject({ kv: { key: p + "a", value: "2", createRevision: r1, modRevision: r2, version: 2 } });
      cancel();
      await s.put(p + "after-cancel", "x");
      await Bun.sleep(100);
      expect(rec.events).toHaveLength(3);
      expect(rec.ended).toBeUndefined();
    });

    test("a watch from an old revision replays what it missed, then follows", async () => {
      const p = unique("replay");
      const r1 = await s.put(p + "a", "1");
      await s.put(p + "b", "2");
      await s.delete(p + "a");
      const rec = new Recorder();
      const cancel = s.watch(p, rec, r1 + 1);
      await s.put(p + "c", "3");
      expect(brief(await rec.waitFor(3))).toEqual([`put ${p}b=2`, `delete ${p}a`, `put ${p}c=3`]);
      cancel();
    });

    test("a watch without a revision sees changes made after it started", async () => {
      const p = unique("now");
      await s.put(p + "old", "x");
      const rec = new Recorder();
      const cancel = s.watch(p, rec);
      // Until the watch is established, a change may or may not be seen: keep writing until one is.
      let i = 0;
      await until(async () => (await s.put(p + "new", String(i++)), rec.events.length > 0), 5_000, () => "no event");
      expect(rec.events.every((e) => e.key === p + "new")).toBe(true);
      cancel();
    });

    test("history before a compaction is gone: the watcher is told to re-list", async () => {
      const p = unique("compact");
      const r1 = await s.put(p + "a", "1");
      const r2 = await s.put(p + "a", "2");
      await s.compact(r2);
      await s.compact(r1); // already compacted past: nothing to do
      const rec = new Recorder();
      s.watch(p, rec, r1);
      const err = await rec.waitEnded();
      expect(err.code).toBe("compacted");
      expect(err.compactRevision).toBe(r2);
      const ok = new Recorder();
      const cancel = s.watch(p, ok, r2);
      expect(brief(await ok.waitFor(1))).toEqual([`put ${p}a=2`]);
      cancel();
      expect((await storeError(s.compact((await s.revision()) + 100))).code).toBe("rejected");
    });

    test("a throwing handler ends its watch with `handler`", async () => {
      const p = unique("throw");
      const rec = new Recorder();
      let calls = 0;
      const onEvent = () => {
        calls++;
        throw new Error("boom");
      };
      s.watch(p, { onEvent, onError: rec.onError }, (await s.revision()) + 1);
      await s.put(p + "a", "1");
      const err = await rec.waitEnded();
      expect(err.code).toBe("handler");
      await s.put(p + "b", "2");
      await Bun.sleep(100);
      expect(calls).toBe(1);
    });

    test("close ends watches with `closed` and refuses further calls", async () => {
      const own = await h.open();
      const rec = new Recorder();
      own.watch(unique("close"), rec, (await own.revision()) + 1);
      await own.close();
      expect((await rec.waitEnded()).code).toBe("closed");
      expect((await storeError(own.get("x"))).code).toBe("closed");
      expect((await storeError(own.putIfAbsent("x", "y"))).code).toBe("closed");
      const late = new Recorder();
      own.watch("x", late);
      expect((await late.waitEnded()).code).toBe("closed");
    });
  });
}
