/**
 * The services this proxy may call, built once per config snapshot: each with its
 * expected SPIFFE ID, endpoints, balancer and a pooled mTLS session whose server
 * check runs once per connection, not per request.
 */
import type { Service } from "../config/kinds/service.ts";
import { systemClock } from "../core/clock.ts";
import { formatSpiffeId, workloadId } from "../pki/spiffe.ts";
import { createBalancer, type BalancerPolicy } from "./balancer/index.ts";
import type { WorkloadCerts } from "./certs.ts";
import { Endpoint, type Balancer } from "./endpoint.ts";
import { PeerIdentityError } from "./errors.ts";
import { peerIdFromDer } from "./peer-identity.ts";
import { OutlierDetector } from "./resilience/outlier.ts";
import { DEFAULT_RETRY_POLICY, RetryBudget, type RetryPolicy } from "./resilience/retry.ts";
import { sender, type Send } from "./transport/http-client.ts";

export interface Destination {
  name: string;
  namespace: string;
  /** The only identity a peer serving this service may present. */
  spiffeId: string;
  endpoints: Endpoint[];
  balancer: Balancer;
  session: Bun.FetchSession;
  send: Send;
  outlier: OutlierDetector;
  budget: RetryBudget;
  retryPolicy: RetryPolicy;
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

export function buildSnapshot(services: Service[], certs: WorkloadCerts, version: string, policy: BalancerPolicy = { type: "least-request" }): Snapshot {
  const destinations = new Map<string, Destination>();
  for (const svc of services) {
    const spiffeId = formatSpiffeId(workloadId(certs.trustDomain, svc.metadata.namespace, svc.spec.identity));
    const session = new Bun.FetchSession({
      tls: {
        cert: certs.chainPem,
        key: certs.keyPem,
        ca: certs.bundlePem,
        rejectUnauthorized: true,
        checkServerIdentity: expectPeer(spiffeId, certs.trustDomain) as never,
      },
      keepAlive: { idleTimeout: 60 },
    });
    const endpoints = (svc.spec.endpoints ?? []).filter((e) => e.weight > 0).map((e) => new Endpoint(e));
    const outlier = new OutlierDetector(systemClock);
    outlier.setEndpoints(endpoints);
    const dest: Destination = {
      name: svc.metadata.name,
      namespace: svc.metadata.namespace,
      spiffeId,
      endpoints,
      balancer: createBalancer(policy, { clock: systemClock, random: Math.random }),
      session,
      send: sender(session),
      outlier,
      budget: new RetryBudget(systemClock),
      retryPolicy: DEFAULT_RETRY_POLICY,
    };
    destinations.set(`${dest.name}.${dest.namespace}`, dest);
    if (!destinations.has(dest.name)) destinations.set(dest.name, dest);
  }
  return { version, destinations };
}

/** `payments`, `payments:80`, `payments.shop`, `payments.shop.svc.cluster.local` → a destination. */
export function resolveHost(snapshot: Snapshot, host: string): Destination | undefined {
  const name = host.replace(/:\d+$/, "").toLowerCase().replace(/\.svc(\.cluster\.local)?\.?$/, "");
  return snapshot.destinations.get(name);
}

export function closeSnapshot(snapshot: Snapshot): void {
  for (const d of new Set(snapshot.destinations.values())) d.session.close();
}
