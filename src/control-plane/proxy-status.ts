/**
 * What each proxy last applied or refused, kept beside its registration (same lease),
 * so any replica can show it and a proxy that is gone takes its status with it.
 *
 * A proxy that refuses its first config never registers (it has no policy to serve
 * with), yet the operator must see why. Its refusal is kept under its service's own key
 * with a short lease, which the proxy renews by reporting again while it waits: one key
 * per service identity, so a workload cannot fill the store, and gone once an instance
 * registers or the reports stop.
 */
import type { Store } from "../store/store.ts";
import { PREFIX, proxyKey, unregisteredRefusalKey } from "./keys.ts";
import { REFUSAL_REASON_CHARS, type ProxyStatus } from "./registration.ts";
import { assertOwnService, proxyIdOf, RegistryError } from "./registry.ts";
import type { Registration } from "./registration.ts";

/** How long an unregistered proxy's refusal is shown after its last report (it reports about every 25 s). */
export const UNREGISTERED_REFUSAL_TTL_MS = 90_000;

export async function recordAck(store: Store, identity: string, reg: Registration, version: string, error?: string, calls?: string[]): Promise<void> {
  const key = proxyKey(proxyIdOf(reg));
  const kv = await store.get(key);
  if (!kv && error !== undefined) return recordUnregisteredRefusal(store, identity, reg, version, error, calls);
  if (!kv) throw new RegistryError(410, "not registered; register before acknowledging config");
  const status = JSON.parse(kv.value) as ProxyStatus;
  if (status.identity !== identity) throw new RegistryError(403, `status belongs to ${status.identity}`);
  const seen = { ...status, calls, lastSeen: new Date().toISOString() };
  const next: ProxyStatus = error ? { ...seen, rejected: { version, reason: error.slice(0, REFUSAL_REASON_CHARS) } } : { ...seen, acked: version };
  if (!error && next.rejected?.version === version) delete next.rejected;
  await store.put(key, JSON.stringify(next), kv.lease ? { lease: kv.lease } : undefined);
}

async function recordUnregisteredRefusal(store: Store, identity: string, reg: Registration, version: string, error: string, calls?: string[]): Promise<void> {
  assertOwnService(identity, reg);
  const status: ProxyStatus = {
    identity,
    namespace: reg.namespace,
    service: reg.service,
    endpoint: `${reg.address}:${reg.port}`,
    registered: false,
    rejected: { version, reason: error.slice(0, REFUSAL_REASON_CHARS) },
    calls,
    lastSeen: new Date().toISOString(),
  };
  const key = unregisteredRefusalKey(reg.namespace, reg.service);
  // One lease per record, renewed by each report: a proxy reporting in a loop must not leave a lease per report.
  let lease = (await store.get(key))?.lease;
  if (lease !== undefined) await store.keepAlive(lease).catch(() => (lease = undefined));
  lease ??= (await store.grant(UNREGISTERED_REFUSAL_TTL_MS)).id;
  await store.put(key, JSON.stringify(status), { lease });
}

export async function listProxyStatus(store: Store): Promise<ProxyStatus[]> {
  const list = await store.list(PREFIX.proxies);
  return list.kvs.map((kv) => JSON.parse(kv.value) as ProxyStatus);
}
