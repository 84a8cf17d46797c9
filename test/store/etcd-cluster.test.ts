/**
 * The etcd store on a three-member cluster losing a member mid-flight: one that hangs, then
 * one that dies while being at once the raft leader, the member serving the store's requests
 * and the one carrying its watch stream: the worst single failure a replica can see.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import pino from "pino";
import { EtcdStore } from "../../src/store/etcd.ts";
import type { WatchEvent } from "../../src/store/store.ts";
import { etcdInstalled, pidAlive, startEtcdCluster, type EtcdCluster } from "../helpers/etcd.ts";
import { Recorder, until } from "./conformance.ts";

const WRITERS = 3;
const WRITES_EACH = 120;

if (etcdInstalled("the etcd store tests")) {
  let cluster: EtcdCluster;
  beforeAll(async () => {
    cluster = await startEtcdCluster(3);
  });
  afterAll(async () => {
    await cluster?.stop();
  });

  test("a watch leaves a member that hangs (SIGSTOP) within a health probe and misses nothing", async () => {
    const leader = await cluster.leader();
    const hung = (leader + 1) % cluster.members.length;
    const others = cluster.endpoints.filter((_, i) => i !== hung);
    const watcher = new EtcdStore({ endpoints: [cluster.endpoints[hung]!, ...others], watchProbeMs: 200, requestTimeoutMs: 500 });
    const writer = new EtcdStore({ endpoints: [cluster.endpoints[leader]!] });
    const rec = new Recorder();
    watcher.watch("hang/", rec, (await writer.revision()) + 1);
    await writer.put("hang/a", "1");
    await rec.waitFor(1); // the stream is up, on the member about to hang
    cluster.pause(hung);
    try {
      await writer.put("hang/b", "2");
      await writer.put("hang/c", "3");
      const evs = await rec.waitFor(3, 5_000);
      expect(evs.map((e) => e.key)).toEqual(["hang/a", "hang/b", "hang/c"]);
    } finally {
      cluster.resume(hung);
    }
    await watcher.close();
    await writer.close();
  });

  test("killing the leader during writes and watches loses no acknowledged write, and the watch carries on", async () => {
    const leader = await cluster.leader();
    const endpoints = [cluster.endpoints[leader]!, ...cluster.endpoints.filter((_, i) => i !== leader)];
    const logged: string[] = [];
    const log = pino({ level: "warn" }, { write: (line: string) => void logged.push(line) });
    // A request forwarded to the leader as it dies is never answered: the member only gives up
    // after etcd's own request timeout (5 s + 2 election timeouts). A short client timeout
    // moves on sooner; what it leaves ambiguous the store resolves.
    const store = new EtcdStore({ endpoints, log, requestTimeoutMs: 1_000 });

    const lease = await store.grant(5_000);
    await store.put("reg/proxy-1", "10.0.0.1:15006", { lease: lease.id });
    const start = await store.revision();
    const watched = new Recorder();
    store.watch("kill/", watched, start + 1);

    // Half plain puts, half putIfAbsent: a conditional write whose answer dies with the
    // member must still come back true, since the key now holds what we wrote.
    const acked = new Map<string, string>();
    const writer = async (w: number) => {
      for (let i = 0; i < WRITES_EACH; i++) {
        const key = `kill/${w}/${String(i).padStart(3, "0")}`;
        const value = `w${w}-${i}`;
        if (i % 2) expect(await store.putIfAbsent(key, value)).toBe(true);
        else await store.put(key, value);
        acked.set(key, value);
      }
    };
    const killer = (async () => {
      await until(() => acked.size >= (WRITERS * WRITES_EACH) / 3, 20_000, () => "writers stalled before the kill");
      await cluster.kill(leader);
    })();
    await Promise.all([...Array.from({ length: WRITERS }, (_, w) => writer(w)), killer]);

    // Every acknowledged write is there.
    const listed = await store.list("kill/");
    expect(listed.kvs.length).toBe(WRITERS * WRITES_EACH);
    for (const kv of listed.kvs) expect(kv.value).toBe(acked.get(kv.key)!);

    // The watch followed onto another member and, compared with a fresh watch of the same
    // history on a surviving member, missed nothing and repeated nothing.
    const survivors = new EtcdStore({ endpoints: endpoints.slice(1) });
    const reference = new Recorder();
    const cancelRef = survivors.watch("kill/", reference, start + 1);
    const total = listed.kvs.length;
    await until(() => reference.events.length >= total && watched.events.length >= reference.events.length, 10_000, () => `watched ${watched.events.length}, reference ${reference.events.length}, keys ${total}`);
    await Bun.sleep(100); // anything extra would arrive now
    const line = (e: WatchEvent) => `${e.revision} ${e.type} ${e.key}`;
    expect(watched.events.map(line)).toEqual(reference.events.map(line));
    expect(watched.ended).toBeUndefined();
    expect(logged.some((l) => l.includes("member failed"))).toBe(true);
    expect(logged.some((l) => l.includes("watch stream ended"))).toBe(true);

    // The lease held across the election: still renewable, its key still there.
    expect(await store.keepAlive(lease.id)).toBe(5_000);
    expect((await store.get("reg/proxy-1"))?.value).toBe("10.0.0.1:15006");

    cancelRef();
    await survivors.close();
    await store.close();
  });

  test("every etcd process started here is stopped", async () => {
    await cluster.stop();
    for (const m of cluster.members) expect(pidAlive(m.pid)).toBe(false);
  });
}
