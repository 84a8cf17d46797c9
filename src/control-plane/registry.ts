/**
 * Registry: a sidecar registers its service's endpoint under a lease and keeps the lease
 * alive by heartbeat; when heartbeats stop, the store deletes the endpoint, so discovery
 * never lists an instance that is gone. Only the identity that registered an endpoint
 * may renew or remove it, and an identity may register only its own service.
 */
import { parseSpiffeId, workloadOf } from "../pki/spiffe.ts";
import type { Store } from "../store/store.ts";
import { StoreError } from "../store/errors.ts";
import { endpointKey, proxyKey, unregisteredRefusalKey } from "./keys.ts";
import type { EndpointRecord, ProxyStatus, Registration } from "./registration.ts";

export const DEFAULT_LEASE_TTL_MS = 10_000;

export class RegistryError extends Error {
  override readonly name = "RegistryError";
  constructor(readonly status: 403 | 404 | 410, message: string) {
    super(message);
  }
}

export interface Lease {
  leaseId: string;
  ttlMs: number;
}

export class Registry {
  constructor(private store: Store, private leaseTtlMs = DEFAULT_LEASE_TTL_MS) {}

  async register(identity: string, reg: Registration, healthy: boolean): Promise<Lease> {
    assertOwnService(identity, reg);
    const lease = await this.store.grant(this.leaseTtlMs);
    const record: EndpointRecord = { ...reg, identity, healthy };
    await this.store.put(endpointKey(reg.namespace, reg.service, reg.address, reg.port), JSON.stringify(record), { lease: lease.id });
    const status: ProxyStatus = { identity, namespace: reg.namespace, service: reg.service, endpoint: `${reg.address}:${reg.port}`, lastSeen: new Date().toISOString() };
    await this.store.put(proxyKey(proxyIdOf(reg)), JSON.stringify(status), { lease: lease.id });
    // An instance of the service applied a config: an older refusal would mislead. One still waiting reports again.
    const refusal = await this.store.get(unregisteredRefusalKey(reg.namespace, reg.service));
    if (refusal?.lease !== undefined) await this.store.revoke(refusal.lease).catch(() => undefined);
    else if (refusal) await this.store.delete(refusal.key);
    return { leaseId: lease.id, ttlMs: lease.ttlMs };
  }

  /** Renews the lease; updates the health the endpoint is offered with when it changed. */
  async heartbeat(identity: string, reg: Registration, leaseId: string, healthy: boolean): Promise<void> {
    const key = endpointKey(reg.namespace, reg.service, reg.address, reg.port);
    const current = await this.owned(identity, key, leaseId);
    try {
      await this.store.keepAlive(leaseId);
    } catch (err) {
      if (err instanceof StoreError && err.code === "lease-not-found") throw new RegistryError(410, "lease has lapsed; register again");
      throw err;
    }
    if (current.healthy !== healthy) await this.store.put(key, JSON.stringify({ ...current, healthy }), { lease: leaseId });
  }

  async deregister(identity: string, reg: Registration, leaseId: string): Promise<void> {
    await this.owned(identity, endpointKey(reg.namespace, reg.service, reg.address, reg.port), leaseId);
    await this.store.revoke(leaseId);
  }

  private async owned(identity: string, key: string, leaseId: string): Promise<EndpointRecord> {
    const kv = await this.store.get(key);
    if (!kv || kv.lease !== leaseId) throw new RegistryError(410, "no such registration under this lease; register again");
    const record = JSON.parse(kv.value) as EndpointRecord;
    if (record.identity !== identity) throw new RegistryError(403, `endpoint belongs to ${record.identity}`);
    return record;
  }
}

export function proxyIdOf(reg: Pick<Registration, "namespace" | "service" | "address" | "port">): string {
  return `${reg.namespace}/${reg.service}/${reg.address}:${reg.port}`;
}

/** A workload may speak only for its own service: its SPIFFE ID must be that service's. */
export function assertOwnService(identity: string, target: { namespace: string; service: string }): void {
  const parsed = parseSpiffeId(identity);
  const w = parsed.ok ? workloadOf(parsed.id) : undefined;
  if (!w || w.namespace !== target.namespace || w.service !== target.service)
    throw new RegistryError(403, `${identity} may not act for service ${target.namespace}/${target.service}`);
}
