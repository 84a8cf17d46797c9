/** The embedded store: the shared conformance suite, then what only a local database owes. */
import { afterAll, describe, expect, test } from "bun:test";
import { StoreError } from "../../src/store/errors.ts";
import { openSqliteStore } from "../../src/store/sqlite.ts";
import { tempDir } from "../helpers/cli.ts";
import { Recorder, storeConformance } from "./conformance.ts";

const dirs: { path: string; cleanup: () => void }[] = [];
const newDir = () => {
  const d = tempDir("mesh-store-");
  dirs.push(d);
  return d.path;
};
afterAll(() => {
  for (const d of dirs) d.cleanup();
});

describe("sqlite store: conformance", () => {
  storeConformance(() => ({ open: async () => openSqliteStore(newDir()), shortTtlMs: 300, expirySlackMs: 50 }));
});

describe("sqlite store: a data directory", () => {
  test("survives a restart: keys, revision, history; every lease gets a fresh TTL, as on an etcd leader change", async () => {
    const dir = newDir();
    let clock = Date.now();
    const now = () => clock;
    const a = openSqliteStore(dir, { now });
    const short = await a.grant(1_000);
    const long = await a.grant(60_000);
    const r1 = await a.put("svc/a", "1");
    await a.put("reg/short", "s", { lease: short.id });
    await a.put("reg/long", "l", { lease: long.id });
    expect(await a.putIfAbsent("tokens/jti-1", "used")).toBe(true);
    const before = await a.revision();
    await a.close();

    clock += 5_000; // down for five seconds: no holder could renew the short lease meanwhile
    const b = openSqliteStore(dir, { now });
    try {
      expect((await b.list("")).kvs.map((kv) => kv.key)).toEqual(["reg/long", "reg/short", "svc/a", "tokens/jti-1"]);
      expect(await b.revision()).toBe(before);
      expect(await b.putIfAbsent("tokens/jti-1", "again")).toBe(false);
      expect(await b.keepAlive(long.id)).toBe(60_000);
      clock += 1_001; // one full TTL after the restart with no renewal: now it lapses
      expect((await b.list("reg/")).kvs.map((kv) => kv.key)).toEqual(["reg/long"]);
      expect((await b.grant(1_000)).id).not.toBe(short.id); // lease ids are never reused
      const rec = new Recorder();
      const cancel = b.watch("", rec, r1);
      expect((await rec.waitFor(5)).map((e) => `${e.type} ${e.key}`)).toEqual([
        "put svc/a", "put reg/short", "put reg/long", "put tokens/jti-1", "delete reg/short",
      ]);
      cancel();
      expect(await b.put("svc/b", "2")).toBe(before + 2);
    } finally {
      await b.close();
    }
  });

  test("the expiry timer deletes a lapsed lease's keys with nobody calling the store", async () => {
    const s = openSqliteStore(newDir());
    try {
      const lease = await s.grant(100);
      await s.put("reg/x", "1", { lease: lease.id });
      const rec = new Recorder();
      s.watch("reg/", rec, (await s.revision()) + 1);
      const [ev] = await rec.waitFor(1, 2_000);
      expect(ev).toMatchObject({ type: "delete", key: "reg/x" });
    } finally {
      await s.close();
    }
  });

  test("a second process cannot open a data directory in use", async () => {
    const dir = newDir();
    const s = openSqliteStore(dir);
    try {
      const src = `import { openSqliteStore } from ${JSON.stringify(import.meta.dir + "/../../src/store/sqlite.ts")};
        try { openSqliteStore(${JSON.stringify(dir)}); console.log("opened"); } catch (e) { console.log(e.code + ": " + e.message); }`;
      const p = Bun.spawnSync([process.execPath, "-e", src]);
      expect(p.stdout.toString().trim()).toBe(`locked: data directory ${dir} is in use by another process`);
    } finally {
      await s.close();
    }
    openSqliteStore(dir).close(); // and can once it is released
  });

  test("history is compacted to the configured window; older resumes are told `compacted`", async () => {
    const s = openSqliteStore(newDir(), { historyRevisions: 20 });
    try {
      for (let i = 0; i < 30; i++) await s.put("k", String(i));
      const rec = new Recorder();
      s.watch("", rec, 2);
      const err = await rec.waitEnded();
      expect(err).toBeInstanceOf(StoreError);
      expect(err.code).toBe("compacted");
      const ok = new Recorder();
      const cancel = s.watch("", ok, (await s.revision()) - 19);
      expect(await ok.waitFor(20)).toHaveLength(20);
      cancel();
    } finally {
      await s.close();
    }
  });
});
