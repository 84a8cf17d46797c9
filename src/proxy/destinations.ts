/**
 * The services this proxy may call, built once per config snapshot: each with its
 * expected SPIFFE ID, endpoints, balancer, resilience state and pooled mTLS connections
 * whose peer check runs once per connection, not per request.
 */
import { defaultDestinationPolicy, type DestinationPolicy, type DestinationPolicySpec } from "../config/kinds/destination-policy.ts";
import type { CompiledRoute } from "./routing.ts";
import type { Service } from "../config/kinds/service.ts";
import { boundedMemo } from "../core/bounded-memo.ts";
import { canonicalAddress } from "../core/ip-address.ts";
import { systemClock } from "../core/clock.ts";
import { formatSpiffeId, workloadId } from "../pki/spiffe.ts";
import { createBalancer, DEFAULT_EWMA_DECAY_MS } from "./balancer/index.ts";
import type { WorkloadCerts } from "./certs.ts";
import { Endpoint, type Balancer } from "./endpoint.ts";
import { PeerIdentityError } from "./errors.ts";
import { peerIdFromDer } from "./peer-identity.ts";
import { CircuitBreaker } from "./resilience/circuit-breaker.ts";
import { zoneSplit, type ZoneSplit } from "./zones.ts";
import { balancerPolicy, callSettings, outlierConfig, retryBudgetConfig, type CallSettings } from "./policy.ts";
import { OutlierDetector } from "./resilience/outlier.ts";
import { RetryBudget } from "./resilience/retry.ts";
import type { VerifyPeer } from "./transport/h1/tls-verify.ts";
import { UpstreamPools } from "./transport/upstream-pools.ts";

export interface Destination {
  name: string;
  namespace: string;
  /** The only identity a peer serving this service may present; undefined for a plain-HTTP service outside the mesh. */
  spiffeId: string | undefined;
  /** "https" over mTLS inside the mesh, "http" to a service outside it. */
  scheme: "https" | "http";
  endpoints: Endpoint[];
  balancer: Balancer;
  /** Set for ewma balancing: each response's latency feeds the endpoint's average. */
  ewmaDecayMs: number | undefined;
  /** Checks a peer's certificate is this service's SPIFFE ID; undefined outside the mesh. */
  verifyPeer: VerifyPeer | undefined;
  /** The Service's tcp ports: port → the workload's port (targetPort). */
  tcpPorts: ReadonlyMap<number, number>;
  /** The Service's virtual addresses (spec.addresses), canonical. */
  addresses: readonly string[];
  /** The endpoints split by the caller's zone, when that changes where it sends (zones.ts). */
  zones: ZoneSplit | undefined;
  /** Pooled connections per endpoint; the peer's SPIFFE ID is checked once per connection. */
  pools: UpstreamPools;
  outlier: OutlierDetector;
  budget: RetryBudget;
  breaker: CircuitBreaker;
  /** Timeouts and retries of a call its policy alone decides (a route rule may set its own: routing.ts). */
  call: CallSettings;
  policy: DestinationPolicySpec;
  /** What this destination was built from: an unchanged one is carried into the next snapshot. */
  builtFrom: { certs: WorkloadCerts; service: string; policy: string };
}

export interface Snapshot {
  version: string;
  destinations: Map<string, Destination>;
  /** HTTPRoutes by the destination they route (routing.ts); empty without any. */
  routes: Map<Destination, CompiledRoute>;
  /** A request's host → its destination, memoized for this snapshot: see resolveHost. */
  byHost: (host: string) => Destination | null;
  /** A virtual address (Service spec.addresses) → its destination; the first Service to claim one keeps it. */
  byAddress: ReadonlyMap<string, Destination>;
}

/** Distinct hosts remembered per snapshot; a flood of made-up hosts only empties the memo. */
const HOSTS_REMEMBERED = 1024;

/** A snapshot of these destinations, with its own memo of hosts resolved: by name, or by a virtual address. */
export function snapshotOf(version: string, destinations: Map<string, Destination>): Snapshot {
  const byAddress = new Map<string, Destination>();
  for (const dest of destinations.values()) for (const address of dest.addresses) if (!byAddress.has(address)) byAddress.set(address, dest);
  const resolve = (host: string) => destinations.get(destinationName(host)) ?? (byAddress.size === 0 ? undefined : byAddress.get(addressOf(host))) ?? null;
  return { version, destinations, routes: new Map(), byHost: boundedMemo(HOSTS_REMEMBERED, resolve), byAddress };
}

/** Verifies the server is the service we meant to reach: its SPIFFE ID, not its hostname. */
export function expectPeer(spiffeId: string, trustDomain: string) {
  return (_host: string, cert: { raw?: Uint8Array }): Error | undefined => {
    if (!cert?.raw) return new PeerIdentityError("peer presented no certificate");
    const id = peerIdFromDer(new Uint8Array(cert.raw), trustDomain);
    if (!id.ok) return new PeerIdentityError(`peer identity refused: ${id.reason}`);
    if (id.spiffeId !== spiffeId) return new PeerIdentityError(`peer is ${id.spiffeId}, expected ${spiffeId}`);
    return undefined;
  };
}

/**
 * A snapshot for a config version. A destination whose service, policy and certificates
 * did not change is carried over whole from `previous` — pooled connections, outlier
 * ejections, retry budget, breaker counts and balancer state survive a config push;
 * one whose endpoints alone changed keeps all that and gets the new endpoint list,
 * each endpoint keeping its live counters by address. Renewed certificates keep all that
 * too, with new pools (new connections present the new certificate). A changed service or
 * policy rebuilds the destination, but what is open stays counted: its breaker continues
 * the old one's counts and its endpoints keep their in-flight counts.
 */
export function buildSnapshot(services: Service[], policies: DestinationPolicy[], certs: WorkloadCerts, version: string, previous?: Snapshot, zone?: string): Snapshot {
  const destinations = new Map<string, Destination>();
  const policyOf = new Map(policies.map((p) => [`${p.spec.service}.${p.metadata.namespace}`, p.spec]));
  for (const svc of services) {
    const key = `${svc.metadata.name}.${svc.metadata.namespace}`;
    const policy = policyOf.get(key) ?? defaultDestinationPolicy(svc.metadata.name);
    const prev = previous?.destinations.get(key);
    const dest =
      prev === undefined ? buildDestination(svc, policy, certs, zone)
      : !sameSpecs(prev, svc, policy) ? buildDestination(svc, policy, certs, zone, prev)
      : withEndpoints(prev.builtFrom.certs === certs ? prev : withCerts(prev, svc, certs), svc, zone);
    destinations.set(key, dest);
    if (!destinations.has(dest.name)) destinations.set(dest.name, dest);
  }
  return snapshotOf(version, destinations);
}

function serviceSansEndpoints(svc: Service): string {
  return JSON.stringify({ ...svc.spec, endpoints: undefined });
}

/** Whether `prev` was built from this service (endpoints aside) and policy. */
function sameSpecs(prev: Destination, svc: Service, policy: DestinationPolicySpec): boolean {
  const b = prev.builtFrom;
  return b.service === serviceSansEndpoints(svc) && b.policy === JSON.stringify(policy);
}

/**
 * `svc`'s endpoints; one `prev` has too (same address, weight and zone) stays the same
 * object, with its live counters: calls and connections open to it release on it.
 */
function endpointsOf(svc: Service, prev: readonly Endpoint[] = []): Endpoint[] {
  const old = new Map(prev.map((e) => [endpointKey(e), e]));
  return (svc.spec.endpoints ?? []).filter((e) => e.weight > 0).map((spec) => {
    const e = new Endpoint(spec);
    return old.get(endpointKey(e)) ?? e;
  });
}

function endpointKey(e: Endpoint): string {
  return `${e.key}/${e.weight}/${e.spec.zone ?? ""}`;
}

function withEndpoints(prev: Destination, svc: Service, zone: string | undefined): Destination {
  const endpoints = endpointsOf(svc, prev.endpoints);
  prev.outlier.setEndpoints(endpoints);
  prev.pools.retain(endpoints);
  return { ...prev, endpoints, zones: zoneSplit(endpoints, zone, prev.policy.loadBalancer) };
}

/**
 * `prev` under renewed certificates: the same breaker, endpoints, outlier state, retry
 * budget and balancer; new pools, so new connections present the new certificate (the
 * old pools close once their calls are done: closeSnapshot).
 */
function withCerts(prev: Destination, svc: Service, certs: WorkloadCerts): Destination {
  const identity = identityOf(svc, certs);
  return { ...prev, ...identity, pools: poolsFor(prev.policy, certs, identity.verifyPeer), builtFrom: { ...prev.builtFrom, certs } };
}

/** Who a peer serving `svc` must prove to be, under `certs`' trust domain. */
function identityOf(svc: Service, certs: WorkloadCerts): Pick<Destination, "spiffeId" | "scheme" | "verifyPeer"> {
  const spiffeId = svc.spec.mtls ? formatSpiffeId(workloadId(certs.trustDomain, svc.metadata.namespace, svc.spec.identity)) : undefined;
  const check = spiffeId ? expectPeer(spiffeId, certs.trustDomain) : undefined;
  const verifyPeer: VerifyPeer | undefined = check && ((der) => check("", { raw: der }));
  return { spiffeId, scheme: spiffeId ? "https" : "http", verifyPeer };
}

function poolsFor(policy: DestinationPolicySpec, certs: WorkloadCerts, verifyPeer: VerifyPeer | undefined): UpstreamPools {
  return new UpstreamPools({
    certs,
    verifyPeer,
    connectTimeoutMs: policy.timeouts.connect,
    idleTimeoutMs: policy.timeouts.idle,
    maxConnections: policy.circuitBreaker.maxConnections,
    multiplex: policy.multiplex,
  });
}

/** `zone`: the caller's, if it has one; `prev`: the destination this one replaces, whose open calls and connections it goes on counting. */
function buildDestination(svc: Service, policy: DestinationPolicySpec, certs: WorkloadCerts, zone: string | undefined, prev?: Destination): Destination {
  const identity = identityOf(svc, certs);
  const endpoints = endpointsOf(svc, prev?.endpoints);
  const outlier = new OutlierDetector(systemClock, outlierConfig(policy));
  outlier.setEndpoints(endpoints);
  // The old detector lets go of the endpoints it shares with this one: an old call's late result must not eject one behind this one's back.
  prev?.outlier.setEndpoints([]);
  const lb = policy.loadBalancer;
  return {
    name: svc.metadata.name,
    namespace: svc.metadata.namespace,
    ...identity,
    tcpPorts: new Map(svc.spec.ports.filter((p) => p.protocol === "tcp").map((p) => [p.port, p.targetPort])),
    addresses: svc.spec.addresses ?? [],
    endpoints,
    zones: zoneSplit(endpoints, zone, lb),
    balancer: createBalancer(balancerPolicy(lb), { clock: systemClock, random: Math.random }),
    ewmaDecayMs: lb.type === "ewma" ? lb.ewmaDecay ?? DEFAULT_EWMA_DECAY_MS : undefined,
    pools: poolsFor(policy, certs, identity.verifyPeer),
    outlier,
    budget: new RetryBudget(systemClock, retryBudgetConfig(policy.retries)),
    breaker: prev ? CircuitBreaker.continuing(prev.breaker, policy.circuitBreaker) : new CircuitBreaker(policy.circuitBreaker),
    call: callSettings(policy),
    policy,
    builtFrom: { certs, service: serviceSansEndpoints(svc), policy: JSON.stringify(policy) },
  };
}

/**
 * `payments`, `payments:80`, `payments.shop`, `payments.shop.svc.cluster.local` → a destination.
 * Memoized per snapshot: normalizing a host costs two regular expressions and three
 * strings, on every request, for the handful of hosts a service actually calls.
 */
export function resolveHost(snapshot: Snapshot, host: string): Destination | undefined {
  return snapshot.byHost(host) ?? undefined;
}

const PORT_SUFFIX = /:\d+$/;
const CLUSTER_SUFFIX = /\.svc(\.cluster\.local)?\.?$/;

function destinationName(host: string): string {
  return host.replace(PORT_SUFFIX, "").toLowerCase().replace(CLUSTER_SUFFIX, "");
}

const BRACKETED = /^\[([0-9a-fA-F:.]+)\](?::\d+)?$/;

/** A host as an address in canonical form (core/ip-address.ts): `10.96.0.5`, `10.96.0.5:80`, `[fd00::5]:80` → the address; anything else unchanged. */
function addressOf(host: string): string {
  const v6 = BRACKETED.exec(host);
  return (v6 !== null ? canonicalAddress(v6[1]!) : canonicalAddress(host.replace(PORT_SUFFIX, ""))) ?? host;
}

/**
 * Closes the pools of `snapshot` that `next` does not carry over; requests in flight
 * finish, and those waiting for a connection go on waiting in the pools of the
 * destination that replaces theirs.
 */
export function closeSnapshot(snapshot: Snapshot, next?: Snapshot): void {
  const kept = new Set([...(next?.destinations.values() ?? [])].map((d) => d.pools));
  for (const d of new Set(snapshot.destinations.values())) {
    if (!kept.has(d.pools)) d.pools.close(next?.destinations.get(`${d.name}.${d.namespace}`));
  }
}
