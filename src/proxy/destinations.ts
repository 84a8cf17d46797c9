/**
 * The services this proxy may call, built once per config snapshot: each with its
 * expected SPIFFE ID, endpoints, balancer and a pooled mTLS session whose server
 * check runs once per connection, not per request.
 */
import { defaultDestinationPolicy, type DestinationPolicy, type DestinationPolicySpec } from "../config/kinds/destination-policy.ts";
import type { Service } from "../config/kinds/service.ts";
import { systemClock } from "../core/clock.ts";
import { formatSpiffeId, workloadId } from "../pki/spiffe.ts";
import { createBalancer, DEFAULT_EWMA_DECAY_MS } from "./balancer/index.ts";
import type { WorkloadCerts } from "./certs.ts";
import { Endpoint, type Balancer } from "./endpoint.ts";
import { PeerIdentityError } from "./errors.ts";
import { peerIdFromDer } from "./peer-identity.ts";
import { CircuitBreaker } from "./resilience/circuit-breaker.ts";
import { balancerPolicy, outlierConfig, retryBudgetConfig, retryPolicy } from "./policy.ts";
import { OutlierDetector } from "./resilience/outlier.ts";
import { RetryBudget, type RetryPolicy } from "./resilience/retry.ts";
import { sender, type Send } from "./transport/http-client.ts";

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
  session: Bun.FetchSession;
  send: Send;
  outlier: OutlierDetector;
  budget: RetryBudget;
  retryPolicy: RetryPolicy;
  breaker: CircuitBreaker;
  /** Longest from sending until response headers, retries included; 0 means none. */
  requestTimeoutMs: number;
  policy: DestinationPolicySpec;
}

export interface Snapshot {
  version: string;
  destinations: Map<string, Destination>;
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

export function buildSnapshot(services: Service[], policies: DestinationPolicy[], certs: WorkloadCerts, version: string): Snapshot {
  const destinations = new Map<string, Destination>();
  const policyOf = new Map(policies.map((p) => [`${p.spec.service}.${p.metadata.namespace}`, p.spec]));
  for (const svc of services) {
    const key = `${svc.metadata.name}.${svc.metadata.namespace}`;
    const dest = buildDestination(svc, policyOf.get(key) ?? defaultDestinationPolicy(svc.metadata.name), certs);
    destinations.set(key, dest);
    if (!destinations.has(dest.name)) destinations.set(dest.name, dest);
  }
  return { version, destinations };
}

function buildDestination(svc: Service, policy: DestinationPolicySpec, certs: WorkloadCerts): Destination {
  const spiffeId = svc.spec.mtls ? formatSpiffeId(workloadId(certs.trustDomain, svc.metadata.namespace, svc.spec.identity)) : undefined;
  const session = new Bun.FetchSession({
    tls: spiffeId
      ? {
          cert: certs.chainPem,
          key: certs.keyPem,
          ca: certs.bundlePem,
          rejectUnauthorized: true,
          checkServerIdentity: expectPeer(spiffeId, certs.trustDomain) as never,
        }
      : undefined,
    keepAlive: { idleTimeout: Math.max(1, Math.ceil(policy.timeouts.idle / 1000)) },
  });
  const endpoints = (svc.spec.endpoints ?? []).filter((e) => e.weight > 0).map((e) => new Endpoint(e));
  const outlier = new OutlierDetector(systemClock, outlierConfig(policy));
  outlier.setEndpoints(endpoints);
  const lb = policy.loadBalancer;
  return {
    name: svc.metadata.name,
    namespace: svc.metadata.namespace,
    spiffeId,
    scheme: spiffeId ? "https" : "http",
    endpoints,
    balancer: createBalancer(balancerPolicy(lb), { clock: systemClock, random: Math.random }),
    ewmaDecayMs: lb.type === "ewma" ? lb.ewmaDecay ?? DEFAULT_EWMA_DECAY_MS : undefined,
    session,
    send: sender(session),
    outlier,
    budget: new RetryBudget(systemClock, retryBudgetConfig(policy.retries)),
    retryPolicy: retryPolicy(policy.retries),
    breaker: new CircuitBreaker(policy.circuitBreaker),
    requestTimeoutMs: policy.timeouts.request,
    policy,
  };
}

/** `payments`, `payments:80`, `payments.shop`, `payments.shop.svc.cluster.local` → a destination. */
export function resolveHost(snapshot: Snapshot, host: string): Destination | undefined {
  const name = host.replace(/:\d+$/, "").toLowerCase().replace(/\.svc(\.cluster\.local)?\.?$/, "");
  return snapshot.destinations.get(name);
}

export function closeSnapshot(snapshot: Snapshot): void {
  for (const d of new Set(snapshot.destinations.values())) d.session.close();
}
