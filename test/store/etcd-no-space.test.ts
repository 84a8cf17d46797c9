/**
 * etcd out of space (its NOSPACE alarm): writes are refused for good, at once and named
 * `no-space`; reads and watches go on; the alarm is readable for status. First against
 * stand-in members (the refusal as the gateway words it), then a real one-member etcd with
 * a 2 MiB quota, filled until it raises the alarm.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import pino from "pino";
import { EtcdClient } from "../../src/store/etcd-client.ts";
import { EtcdAlarms } from "../../src/store/etcd-health.ts";
import { StoreError } from "../../src/store/errors.ts";
import { EtcdStore } from "../../src/store/etcd.ts";
import { etcdInstalled, pidAlive, startEtcdCluster, type EtcdCluster } from "../helpers/etcd.ts";
import { Recorder } from "./conformance.ts";

/** What the gateway answers for a gRPC RESOURCE_EXHAUSTED (code 8): HTTP 429 and the status as JSON. */
const exhausted = (message: string) => Response.json({ error: message, code: 8, message }, { status: 429 });

/** Two stand-in members answering every request with `answer`; `hits` counts the requests. */
function standIns(answer: () => Response) {
  const counted = { hits: 0 };
  const servers = [0, 1].map(() =>
    Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      fetch: () => {
        counted.hits++;
        return answer();
      },
    }),
  );
  return { counted, endpoints: servers.map((s) => `http://127.0.0.1:${s.port}`), stop: () => servers.forEach((s) => s.stop(true)) };
}

describe("a refusal for lack of space (gRPC RESOURCE_EXHAUSTED)", () => {
  test("'database space exceeded' is final: `no-space` from the first member, not retried on the others", async () => {
    const members = standIns(() => exhausted("etcdserver: mvcc: database space exceeded"));
    try {
      const client = new EtcdClient({ endpoints: members.endpoints, retryForMs: 5_000 });
      const t0 = performance.now();
      const err = (await client.call("/v3/kv/put", {}, "retry").catch((e: unknown) => e)) as StoreError;
      expect(err).toBeInstanceOf(StoreError);
      expect(err.code).toBe("no-space");
      expect(err.message).toContain("database space exceeded");
      expect(members.counted.hits).toBe(1);
      expect(performance.now() - t0).toBeLessThan(1_000);
    } finally {
      members.stop();
    }
  });

  test("'too many requests' (the same gRPC code) stays transient: tried on the next member until the window ends", async () => {
    const members = standIns(() => exhausted("etcdserver: too many requests"));
    try {
      const client = new EtcdClient({ endpoints: members.endpoints, retryForMs: 300 });
      const err = (await client.call("/v3/kv/put", {}, "retry").catch((e: unknown) => e)) as StoreError;
      expect(err.code).toBe("unavailable");
      expect(members.counted.hits).toBeGreaterThan(2);
    } finally {
      members.stop();
    }
  });
});

describe("reading etcd's alarms", () => {
  test("a member that never answers is reported within the timeout, and the next check asks another member", async () => {
    const silent = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    const answering = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => Response.json({ alarms: [{ memberID: "1", alarm: "NOSPACE" }, { memberID: "2", alarm: "NOSPACE" }] }) });
    try {
      const alarms = new EtcdAlarms({ endpoints: [`http://127.0.0.1:${silent.port}`, `http://127.0.0.1:${answering.port}`], timeoutMs: 300, cacheMs: 0 });
      const t0 = performance.now();
      const first = await alarms.check();
      expect(performance.now() - t0).toBeLessThan(1_000);
      expect(first.error).toContain(`127.0.0.1:${silent.port}`);
      expect(first.alarms).toEqual([]);
      const second = await alarms.check();
      expect(second).toEqual({ alarms: ["NOSPACE"], checkedAt: second.checkedAt });
      expect(alarms.current).toBe(second);
    } finally {
      silent.stop(true);
      answering.stop(true);
    }
  });

  test("a recent read is reused, and callers at the same moment share one read", async () => {
    let reads = 0;
    const member = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      fetch: async () => {
        reads++;
        await Bun.sleep(50);
        return Response.json({});
      },
    });
    try {
      let now = 1_000_000;
      const alarms = new EtcdAlarms({ endpoints: [`http://127.0.0.1:${member.port}`], cacheMs: 3_000, now: () => now });
      const [a, b] = await Promise.all([alarms.check(), alarms.check()]);
      expect(a).toBe(b);
      expect(a).toEqual({ alarms: [], checkedAt: 1_000_000 });
      now += 2_999;
      expect(await alarms.check()).toBe(a);
      expect(reads).toBe(1);
      now += 1;
      await alarms.check();
      expect(reads).toBe(2);
    } finally {
      member.stop(true);
    }
  });
});

if (etcdInstalled("the etcd out-of-space tests")) {
  describe("a real etcd out of space", () => {
    let cluster: EtcdCluster;
    let endpoint = "";

    beforeAll(async () => {
      cluster = await startEtcdCluster(1, { quotaBackendBytes: 2 << 20 });
      endpoint = cluster.endpoints[0]!;
      const seed = new EtcdStore({ endpoints: [endpoint] });
      await seed.put("kept/a", "1");
      await seed.put("kept/b", "2");
      await seed.close();
      // Straight through the gateway: the store under test must not be what fills it.
      const filler = Buffer.from("x".repeat(400_000)).toString("base64");
      for (let i = 0; i < 30; i++) {
        const res = await fetch(`${endpoint}/v3/kv/put`, { method: "POST", body: JSON.stringify({ key: Buffer.from(`filler/${i}`).toString("base64"), value: filler }) });
        if (res.status !== 200) break;
      }
    }, 30_000);

    afterAll(async () => {
      await cluster?.stop();
    });

    test("the alarm is read as NOSPACE", async () => {
      const check = await new EtcdAlarms({ endpoints: [endpoint] }).check();
      expect(check.error).toBeUndefined();
      expect(check.alarms).toEqual(["NOSPACE"]);
    });

    test("puts, conditional writes and lease grants fail at once as `no-space`; reads and deletes still work", async () => {
      const store = new EtcdStore({ endpoints: [endpoint] });
      try {
        for (const write of [() => store.put("new/k", "v"), () => store.putIfAbsent("new/k", "v"), () => store.grant(5_000)]) {
          const t0 = performance.now();
          const err = (await write().catch((e: unknown) => e)) as StoreError;
          expect(err).toBeInstanceOf(StoreError);
          expect(err.code).toBe("no-space");
          expect(err.message).toContain("database space exceeded");
          expect(performance.now() - t0).toBeLessThan(1_000);
        }
        expect((await store.list("kept/")).kvs.map((kv) => kv.value)).toEqual(["1", "2"]);
        expect(await store.delete("kept/b")).toBe(true);
      } finally {
        await store.close();
      }
    });

    test("a watch stays on its member through the alarm (its health probe ignores NOSPACE) and still delivers", async () => {
      const warnings: string[] = [];
      const log = pino({ level: "warn" }, { write: (line: string) => void warnings.push(line) });
      const store = new EtcdStore({ endpoints: [endpoint], watchProbeMs: 100, log });
      try {
        const rec = new Recorder();
        store.watch("kept/", rec);
        await Bun.sleep(1_000); // ten probes: each used to end the stream ({"health":"false"})
        await fetch(`${endpoint}/v3/kv/deleterange`, { method: "POST", body: JSON.stringify({ key: Buffer.from("kept/a").toString("base64") }) });
        const evs = await rec.waitFor(1, 5_000);
        expect(evs.map((e) => `${e.type} ${e.key}`)).toEqual(["delete kept/a"]);
        expect(warnings.filter((l) => l.includes("watch stream ended"))).toEqual([]);
        expect(rec.ended).toBeUndefined();
      } finally {
        await store.close();
      }
    });

    test("every etcd process started here is stopped", async () => {
      await cluster.stop();
      for (const m of cluster.members) expect(pidAlive(m.pid)).toBe(false);
    });
  });
}
