/**
 * What each proxy last applied or refused, kept beside its registration (same lease),
 * so any replica can show it and a proxy that is gone takes its status with it.
 */
import type { Store } from "../store/store.ts";
import { PREFIX, proxyKey } from "./keys.ts";
import type { ProxyStatus } from "./registration.ts";
import { proxyIdOf, RegistryError } from "./registry.ts";
import type { Registration } from "./registration.ts";

export async function recordAck(store: Store, identity: string, reg: Registration, version: string, error?: string, calls?: string[]): Promise<void> {
  const key = proxyKey(proxyIdOf(reg));
  const kv = await store.get(key);
  if (!kv) throw new RegistryError(410, "not registered; register before acknowledging config");
  const status = JSON.parse(kv.value) as ProxyStatus;
  if (status.identity !== identity) throw new RegistryError(403, `status belongs to ${status.identity}`);
  const seen = { ...status, calls, lastSeen: new Date().toISOString() };
  const next: ProxyStatus = error ? { ...seen, rejected: { version, reason: error.slice(0, 2000) } } : { ...seen, acked: version };
  if (!error && next.rejected?.version === version) delete next.rejected;
  await store.put(key, JSON.stringify(next), kv.lease ? { lease: kv.lease } : undefined);
}

export async function listProxyStatus(store: Store): Promise<ProxyStatus[]> {
  const list = await store.list(PREFIX.proxies);
  return list.kvs.map((kv) => JSON.parse(kv.value) as ProxyStatus);
}
