/**
 * Registry: a sidecar registers its service's endpoint under a lease and keeps the lease
 * alive by heartbeat; when heartbeats stop, the store deletes the endpoint, so discovery
 * never lists an instance that is gone. Only the identity that registered an endpoint
 * may renew or remove it, and an identity may register only its own service, up to a
 * number of endpoints: one identity cannot fill the store, or every caller's config.
 */
import { parseSpiffeId, workloadOf } from "../pki/spiffe.ts";
import type { Store } from "../store/store.ts";
import { StoreError } from "../store/errors.ts";
import { endpointKey, endpointsOf, proxyKey, unregisteredRefusalKey } from "./keys.ts";
import type { EndpointRecord, HeldCertificate, ProxyStatus, Registration } from "./registration.ts";

export const DEFAULT_LEASE_TTL_MS = 10_000;
/** Endpoints one service may have registered at once, unless the control plane is told otherwise. */
export const DEFAULT_MAX_ENDPOINTS_PER_SERVICE = 256;

export class RegistryError extends Error {
  override readonly name = "RegistryError";
  constructor(readonly status: 403 | 404 | 410 | 429, message: string) {
    super(message);
  }
}

export interface Lease {
  leaseId: string;
  ttlMs: number;
}

export class Registry {
  /** Registrations of a service one at a time, so concurrent ones cannot all pass the limit together. */
  private readonly registering = new Map<string, Promise<unknown>>();

  constructor(
    private store: Store,
    private leaseTtlMs = DEFAULT_LEASE_TTL_MS,
    private maxEndpointsPerService = DEFAULT_MAX_ENDPOINTS_PER_SERVICE,
  ) {}

  async register(identity: string, reg: Registration, healthy: boolean, certificate?: HeldCertificate): Promise<Lease> {
    assertOwnService(identity, reg);
    const service = endpointsOf(reg.namespace, reg.service);
    const turn = (this.registering.get(service) ?? Promise.resolve()).then(() => this.registerNow(identity, reg, healthy, certificate));
    const settled = turn.catch(() => undefined);
    this.registering.set(service, settled);
    void settled.then(() => {
      if (this.registering.get(service) === settled) this.registering.delete(service);
    });
    return turn;
  }

  private async registerNow(identity: string, reg: Registration, healthy: boolean, certificate: HeldCertificate | undefined): Promise<Lease> {
    const key = endpointKey(reg.namespace, reg.service, reg.address, reg.port);
    await this.assertRoom(reg, key);
    const lease = await this.store.grant(this.leaseTtlMs);
    const record: EndpointRecord = { ...reg, identity, healthy, ...(certificate && { certificate }) };
    await this.store.put(key, JSON.stringify(record), { lease: lease.id });
    const status: ProxyStatus = { identity, namespace: reg.namespace, service: reg.service, endpoint: `${reg.address}:${reg.port}`, lastSeen: new Date().toISOString() };
    await this.store.put(proxyKey(proxyIdOf(reg)), JSON.stringify(status), { lease: lease.id });
    // An instance of the service applied a config: an older refusal would mislead. One still waiting reports again.
    const refusal = await this.store.get(unregisteredRefusalKey(reg.namespace, reg.service));
    if (refusal?.lease !== undefined) await this.store.revoke(refusal.lease).catch(() => undefined);
    else if (refusal) await this.store.delete(refusal.key);
    return { leaseId: lease.id, ttlMs: lease.ttlMs };
  }

  /** A new endpoint must leave the service within its limit; registering one it has again always may. */
  private async assertRoom(reg: Registration, key: string): Promise<void> {
    const { kvs } = await this.store.list(endpointsOf(reg.namespace, reg.service));
    if (kvs.length < this.maxEndpointsPerService || kvs.some((kv) => kv.key === key)) return;
    throw new RegistryError(429, `service ${reg.namespace}/${reg.service} has ${kvs.length} endpoints registered, the most one service may (the control plane's --max-endpoints-per-service)`);
  }

  /** Renews the lease; updates the health the endpoint is offered with, and the certificate it holds, when they changed. */
  async heartbeat(identity: string, reg: Registration, leaseId: string, healthy: boolean, certificate?: HeldCertificate): Promise<void> {
    const key = endpointKey(reg.namespace, reg.service, reg.address, reg.port);
    const current = await this.owned(identity, key, leaseId);
    try {
      await this.store.keepAlive(leaseId);
    } catch (err) {
      if (err instanceof StoreError && err.code === "lease-not-found") throw new RegistryError(410, "lease has lapsed; register again");
      throw err;
    }
    // A renewal shows here at the next heartbeat: its connection, opened with the new certificate, proved it.
    const held = certificate && !sameCertificate(current.certificate, certificate) ? { certificate } : undefined;
    if (current.healthy !== healthy || held) await this.store.put(key, JSON.stringify({ ...current, healthy, ...held }), { lease: leaseId });
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

function sameCertificate(a: HeldCertificate | undefined, b: HeldCertificate): boolean {
  return a !== undefined && a.issuerKeyId === b.issuerKeyId && a.notAfter === b.notAfter;
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
