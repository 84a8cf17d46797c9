/**
 * Join-token records: a token is redeemable only while its record exists and has uses
 * left, and concurrent redemptions never exceed its uses. On the embedded store and on
 * a real etcd (the HA store, where two replicas race through compare-and-swap).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { generateKeyPair } from "jose";
import { issueJoinToken, verifyJoinToken, type TokenKey } from "../../src/control-plane/join-token.ts";
import { listJoinTokens, recordJoinToken, redeemJoinToken, revokeJoinToken } from "../../src/control-plane/join-token-records.ts";
import { joinTokenKey } from "../../src/control-plane/keys.ts";
import { EtcdStore } from "../../src/store/etcd.ts";
import { openSqliteStore } from "../../src/store/sqlite.ts";
import type { Store } from "../../src/store/store.ts";
import { tempDir } from "../helpers/cli.ts";
import { etcdInstalled, startEtcdCluster, type EtcdCluster } from "../helpers/etcd.ts";

const TD = "mesh.local";
let key: TokenKey;
beforeAll(async () => {
  const { privateKey, publicKey } = await generateKeyPair("ES256");
  key = { privateKey, publicKey, kid: "test-key" };
});

async function issued(store: Store, uses: number, service = "orders") {
  const t = await issueJoinToken(key, { trustDomain: TD, namespace: "default", service }, 60_000, uses);
  await recordJoinToken(store, { ...t, uses });
  return { ...t, verified: await verifyJoinToken(t.token, key, TD) };
}

const outcome = (p: Promise<unknown>) => p.then(() => "ok", (e: Error) => e.message);

function recordRules(open: () => Promise<{ store: Store; other?: Store; close: () => Promise<void> }>) {
  test("a single-use token is redeemed once; the second gets 'already used'", async () => {
    const { store, close } = await open();
    const t = await issued(store, 1);
    expect(await outcome(redeemJoinToken(store, t.verified))).toBe("ok");
    expect(await outcome(redeemJoinToken(store, t.verified))).toBe("token was already used");
    await close();
  });

  test("a token of 5 uses, redeemed by 24 clients at once across two store clients, succeeds exactly 5 times", async () => {
    const { store, other, close } = await open();
    const t = await issued(store, 5);
    const results = await Promise.all(Array.from({ length: 24 }, (_, i) => outcome(redeemJoinToken(i % 2 && other ? other : store, t.verified))));
    expect(results.filter((r) => r === "ok")).toHaveLength(5);
    expect(new Set(results.filter((r) => r !== "ok"))).toEqual(new Set(["token was used 5 times, its limit"]));
    const [listed] = (await listJoinTokens(store)).filter((r) => r.id === t.jti);
    expect(listed).toMatchObject({ id: t.jti, spiffeId: "spiffe://mesh.local/ns/default/sa/orders", uses: 5, used: 5 });
    expect(listed).not.toHaveProperty("nonce");
    await close();
  });

  test("a revoked token, and one the store never recorded, are refused; revoking twice finds nothing", async () => {
    const { store, close } = await open();
    const t = await issued(store, 3);
    expect(await outcome(redeemJoinToken(store, t.verified))).toBe("ok");
    expect(await revokeJoinToken(store, t.jti)).toBe(true);
    expect(await outcome(redeemJoinToken(store, t.verified))).toBe("token was revoked, or this control plane never issued it");
    expect(await revokeJoinToken(store, t.jti)).toBe(false);
    const unrecorded = await issueJoinToken(key, { trustDomain: TD, namespace: "default", service: "orders" }, 60_000);
    expect(await outcome(redeemJoinToken(store, await verifyJoinToken(unrecorded.token, key, TD)))).toBe("token was revoked, or this control plane never issued it");
    await close();
  });

  test("a claim written before tokens had records counts as used, and is left out of the list", async () => {
    const { store, close } = await open();
    const t = await issueJoinToken(key, { trustDomain: TD, namespace: "default", service: "orders" }, 60_000);
    await store.put(joinTokenKey(t.jti), JSON.stringify({ spiffeId: t.spiffeId, claim: crypto.randomUUID() }));
    expect(await outcome(redeemJoinToken(store, await verifyJoinToken(t.token, key, TD)))).toBe("token was already used");
    expect((await listJoinTokens(store)).map((r) => r.id)).not.toContain(t.jti);
    await close();
  });

  test("a record for another identity refuses the token", async () => {
    const { store, close } = await open();
    const orders = await issued(store, 1, "orders");
    const payments = await issued(store, 1, "payments");
    // A payments token presented with the orders token's id (as if the store were tampered with).
    const forged = { ...payments.verified, jti: orders.jti };
    expect(await outcome(redeemJoinToken(store, forged))).toBe("token's record is for another identity");
    await close();
  });
}

describe("embedded store", () => {
  recordRules(async () => {
    const dir = tempDir("mesh-tokens-");
    const store = openSqliteStore(dir.path);
    return { store, close: async () => (await store.close(), dir.cleanup()) };
  });
});

if (etcdInstalled("the join-token records tests")) {
  describe("etcd", () => {
    let cluster: EtcdCluster;
    beforeAll(async () => {
      cluster = await startEtcdCluster(1);
    });
    afterAll(async () => {
      await cluster?.stop();
    });
    recordRules(async () => {
      const store = new EtcdStore({ endpoints: cluster.endpoints });
      const other = new EtcdStore({ endpoints: cluster.endpoints });
      return { store, other, close: async () => (await store.close(), await other.close()) };
    });
  });
}

test("lifetimes: a single-use token at most 24h, one of several uses at most 720h", async () => {
  const grant = { trustDomain: TD, namespace: "default", service: "orders" };
  await expect(issueJoinToken(key, grant, 25 * 3600_000, 1)).rejects.toThrow("between 1 ms and 24h (720h for a token of several uses)");
  expect((await issueJoinToken(key, grant, 720 * 3600_000, 2)).expiresAt).toBeGreaterThan(Date.now() + 719 * 3600_000);
  await expect(issueJoinToken(key, grant, 721 * 3600_000, 2)).rejects.toThrow("between 1 ms and 720h");
});
