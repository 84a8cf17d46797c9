/**
 * Manifest writes from replicas whose views lag one another: each change is checked
 * against its replica's view and committed under one guard, so a change checked against a
 * view that missed another replica's write is checked again once the view has it. Two
 * replicas here are two views on one embedded store, one of them holding its watch events
 * back as a replica behind on its etcd watch would; nothing else is mocked. Last, what the
 * admin API answers when a change cannot go in whole (the store's refusals stood in for).
 */
import { afterAll, expect, test } from "bun:test";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import pino from "pino";
import { createLogger } from "../../src/core/log.ts";
import { adminApi, type AdminApiDeps } from "../../src/control-plane/api/admin-api.ts";
import { AuditLog } from "../../src/control-plane/audit.ts";
import { MANIFESTS_GUARD } from "../../src/control-plane/keys.ts";
import { applyDocuments, deleteManifest } from "../../src/control-plane/manifest-store.ts";
import { PolicyDir } from "../../src/control-plane/policy-dir.ts";
import { ControlPlaneView } from "../../src/control-plane/view.ts";
import { StoreError } from "../../src/store/errors.ts";
import { openSqliteStore } from "../../src/store/sqlite.ts";
import type { Store, WatchEvent } from "../../src/store/store.ts";
import { tempDir } from "../helpers/cli.ts";
import { serviceManifest } from "../helpers/control-plane.ts";
import { eventually } from "../helpers/wait.ts";

const tmp = tempDir("mesh-manifest-commit-");
afterAll(() => tmp.cleanup());
const log = createLogger({ level: "silent" });

const M = "mesh.dev/v1alpha1";
const route = (name: string, service: string) => ({ apiVersion: M, kind: "HTTPRoute", metadata: { name, namespace: "default" }, spec: { service, rules: [{ backends: [{ service }] }] } });
const policy = (name: string, service: string) => ({ apiVersion: M, kind: "DestinationPolicy", metadata: { name, namespace: "default" }, spec: { service, timeouts: { request: "2s" } } });
const docs = (...manifests: Record<string, unknown>[]) => manifests.map((manifest, i) => ({ source: `test#${i}`, manifest }));

/** `store` as a replica behind on its watch sees it: while held, its watch events wait; released, they arrive in order. */
function laggingWatch(store: Store): { store: Store; hold(): void; release(): void } {
  const held: (() => void)[] = [];
  let holding = false;
  const lagging = new Proxy(store, {
    get(target, prop) {
      if (prop === "watch")
        return (prefix: string, handlers: Parameters<Store["watch"]>[1], from?: number) =>
          target.watch(prefix, { onEvent: (ev: WatchEvent) => (holding ? held.push(() => handlers.onEvent(ev)) : handlers.onEvent(ev)), onError: (err) => handlers.onError(err) }, from);
      const value: unknown = Reflect.get(target, prop, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  return {
    store: lagging,
    hold: () => void (holding = true),
    release() {
      holding = false;
      for (const deliver of held.splice(0)) deliver();
    },
  };
}

async function replicas(name: string) {
  const store = openSqliteStore(join(tmp.path, name));
  const a = new ControlPlaneView(store, log);
  const lag = laggingWatch(store);
  const b = new ControlPlaneView(lag.store, log);
  await a.start();
  await b.start();
  return {
    store, a, b, lag,
    async close() {
      a.stop();
      b.stop();
      await store.close();
    },
  };
}

test("two HTTPRoutes for one service through two replicas, the second's view behind: the second is checked again and refused", async () => {
  const r = await replicas("routes");
  try {
    expect((await applyDocuments(r.store, r.a, docs(serviceManifest("orders")))).ok).toBe(true);
    expect(await eventually(() => r.b.manifests.has("Service/default/orders"), 2_000, 5)).toBe(true);
    r.lag.hold();
    expect((await applyDocuments(r.store, r.a, docs(route("via-a", "orders")))).ok).toBe(true);
    // B's view has not seen A's route: its first check passes, its commit is refused, and it waits for its view.
    setTimeout(() => r.lag.release(), 200);
    const viaB = await applyDocuments(r.store, r.b, docs(route("via-b", "orders")));
    expect(viaB.ok).toBe(false);
    expect(viaB.refused).toBe("invalid");
    expect(viaB.errors).toEqual([`test#0 spec.service: Service "orders" already has HTTPRoute "via-a"; a service takes one`]);
    const stored = (await r.store.list("/mesh/manifests/HTTPRoute/")).kvs.map((kv) => kv.key);
    expect(stored).toEqual(["/mesh/manifests/HTTPRoute/default/via-a"]);
  } finally {
    await r.close();
  }
});

test("a Service deleted through a replica that has not seen a policy now using it: refused, 409", async () => {
  const r = await replicas("delete");
  try {
    expect((await applyDocuments(r.store, r.a, docs(serviceManifest("ledger")))).ok).toBe(true);
    expect(await eventually(() => r.b.manifests.has("Service/default/ledger"), 2_000, 5)).toBe(true);
    r.lag.hold();
    expect((await applyDocuments(r.store, r.a, docs(policy("ledger-timeouts", "ledger")))).ok).toBe(true);
    setTimeout(() => r.lag.release(), 200);
    expect(await deleteManifest(r.store, r.b, "Service", "default", "ledger")).toEqual({ ok: false, status: 409, error: `Service "default/ledger" is used by DestinationPolicy "ledger-timeouts"; delete that first` });
    expect(await r.store.get("/mesh/manifests/Service/default/ledger")).toBeDefined();
  } finally {
    await r.close();
  }
});

test("a refusal from a view that is behind is not final: a policy naming a Service just applied elsewhere is stored", async () => {
  const r = await replicas("refusal");
  try {
    r.lag.hold();
    expect((await applyDocuments(r.store, r.a, docs(serviceManifest("fresh")))).ok).toBe(true);
    setTimeout(() => r.lag.release(), 200);
    const viaB = await applyDocuments(r.store, r.b, docs(policy("fresh-timeouts", "fresh")));
    expect(viaB).toEqual({ ok: true, errors: [], applied: [{ kind: "DestinationPolicy", namespace: "default", name: "fresh-timeouts", outcome: "created" }] });
    // And "no such manifest" likewise: a delete through B of what only A has seen deletes it.
    r.lag.hold();
    expect((await applyDocuments(r.store, r.a, docs(policy("only-a", "fresh")))).ok).toBe(true);
    setTimeout(() => r.lag.release(), 200);
    expect(await deleteManifest(r.store, r.b, "DestinationPolicy", "default", "only-a")).toEqual({ ok: true });
    expect(await r.store.get("/mesh/manifests/DestinationPolicy/default/only-a")).toBeUndefined();
  } finally {
    await r.close();
  }
});

test("concurrent applies of one manifest through both replicas both succeed: a lost race is checked again, not refused", async () => {
  const r = await replicas("lww");
  try {
    expect((await applyDocuments(r.store, r.a, docs(serviceManifest("payments")))).ok).toBe(true);
    expect(await eventually(() => r.b.manifests.has("Service/default/payments"), 2_000, 5)).toBe(true);
    for (let round = 0; round < 5; round++) {
      const [viaA, viaB] = await Promise.all([applyDocuments(r.store, r.a, docs(policy("lww", "payments"))), applyDocuments(r.store, r.b, docs({ ...policy("lww", "payments"), spec: { service: "payments", timeouts: { request: `${round + 3}s` } } }))]);
      expect([viaA.ok, viaB.ok]).toEqual([true, true]);
    }
  } finally {
    await r.close();
  }
});

test("the policies directory applies and deletes as one change: dropping a Service another manifest still uses refuses the load", async () => {
  const r = await replicas("policy-dir");
  const dir = join(tmp.path, "policies");
  mkdirSync(dir);
  const policies = new PolicyDir(dir, r.store, r.a, log);
  try {
    writeFileSync(join(dir, "billing.json"), JSON.stringify(serviceManifest("billing")));
    writeFileSync(join(dir, "billing-policy.json"), JSON.stringify(policy("billing-timeouts", "billing")));
    await policies.start();
    expect(policies.status).toMatchObject({ errors: [], applied: 2 });
    // Dropping the policy and its Service together deletes both, in one commit.
    const before = await r.store.revision();
    rmSync(join(dir, "billing.json"));
    rmSync(join(dir, "billing-policy.json"));
    expect(await eventually(() => policies.status.applied === 0, 5_000)).toBe(true);
    expect(await r.store.revision()).toBe(before + 1);
    expect((await r.store.list("/mesh/manifests/")).kvs).toEqual([]);
    // A Service the directory drops while a manifest applied through the API uses it: the load is refused whole.
    writeFileSync(join(dir, "billing.json"), JSON.stringify(serviceManifest("billing")));
    expect(await eventually(() => policies.status.applied === 1, 5_000)).toBe(true);
    expect((await applyDocuments(r.store, r.a, docs(policy("by-api", "billing")))).ok).toBe(true);
    writeFileSync(join(dir, "other.json"), JSON.stringify(serviceManifest("other")));
    rmSync(join(dir, "billing.json"));
    expect(await eventually(() => policies.status.errors.length > 0, 5_000)).toBe(true);
    expect(policies.status.errors).toEqual([`Service "default/billing" is used by DestinationPolicy "by-api"; delete that first`]);
    expect(r.a.manifests.has("Service/default/billing")).toBe(true);
    expect(r.a.manifests.has("Service/default/other")).toBe(false);
  } finally {
    policies.stop();
    await r.close();
  }
});

test("through the admin API: past one store transaction 413, races lost every time 409, an answer lost 503 and audited all the same; nothing stored", async () => {
  const store = openSqliteStore(join(tmp.path, "admin"));
  let mode: "too-large" | "always-beaten" | "answer-lost" = "too-large";
  const flaky = new Proxy(store, {
    get(target, prop) {
      if (prop === "commit")
        return async (...args: Parameters<Store["commit"]>) => {
          if (mode === "too-large") throw new StoreError("too-large", "etcd refused the commit of 2 writes (3 operations) as one transaction: etcdserver: too many operations in txn request");
          if (mode === "answer-lost") throw new StoreError("unavailable", "etcd: commit of 2 writes may or may not have been applied: request timed out", undefined, { outcomeUnknown: true });
          // Another replica's write goes in first, every time.
          const at = (await target.get(MANIFESTS_GUARD))?.modRevision ?? 0;
          await target.commit({ key: MANIFESTS_GUARD, modRevision: at }, [{ put: "/mesh/manifests/Service/default/elsewhere", value: JSON.stringify(serviceManifest("elsewhere")) }]);
          return target.commit(...args);
        };
      const value: unknown = Reflect.get(target, prop, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  const view = new ControlPlaneView(flaky, log);
  await view.start();
  const lines: Record<string, unknown>[] = [];
  const audit = new AuditLog(pino({ level: "info" }, { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) }));
  const api = adminApi({ store: flaky, view, audit } as unknown as AdminApiDeps, async (_c, next) => next());
  const apply = async () => {
    const res = await api.request("/v1/manifests", { method: "PUT", body: JSON.stringify({ documents: docs(serviceManifest("a"), serviceManifest("b")) }) });
    return { status: res.status, body: (await res.json()) as { errors: string[]; error?: string } };
  };
  try {
    const tooLarge = await apply();
    expect(tooLarge.status).toBe(413);
    expect(tooLarge.body.errors[0]).toStartWith("2 manifests (and 0 deletions) are more than the store takes in one transaction; nothing was applied");
    mode = "always-beaten";
    const beaten = await apply();
    expect(beaten.status).toBe(409);
    expect(beaten.body.errors[0]).toContain("nothing was applied: try again");
    expect(lines).toEqual([]);
    mode = "answer-lost";
    const lost = await apply();
    expect(lost.status).toBe(503);
    expect(lost.body.error).toStartWith("store unavailable: etcd: commit of 2 writes may or may not have been applied");
    expect(lines.map((l) => [l.audit, l.changes, l.unconfirmed])).toEqual([["manifests-changed", ["Service default/a created", "Service default/b created"], true]]);
    expect((await store.list("/mesh/manifests/Service/default/")).kvs.map((kv) => kv.key)).toEqual(["/mesh/manifests/Service/default/elsewhere"]);
  } finally {
    view.stop();
    await store.close();
  }
});
