/** The config in force, as /config_dump shows it: destinations, routes, the inbound's policies and the roots trusted. */
import type { HTTPRoute } from "../config/kinds/http-route.ts";
import type { WorkloadCerts } from "./certs.ts";
import type { Snapshot } from "./destinations.ts";
import type { InboundPolicies } from "./inbound-admission.ts";

const idOf = (m: { metadata: { namespace: string; name: string } }) => `${m.metadata.namespace}/${m.metadata.name}`;

export function configInForce(snapshot: Snapshot, routes: readonly HTTPRoute[], inbound: InboundPolicies) {
  const applied = new Set([...snapshot.routes.values()].map((c) => c.id));
  return {
    version: snapshot.version,
    destinations: [...new Set(snapshot.destinations.values())].map((d) => ({
      name: d.name,
      namespace: d.namespace,
      identity: d.spiffeId ?? "none (plain HTTP, outside the mesh)",
      policy: d.policy,
      endpoints: d.endpoints.map((e) => ({ address: e.key, weight: e.weight, ...(e.spec.zone !== undefined && { zone: e.spec.zone }), inflight: e.inflight })),
    })),
    routes: routes.map((r) => ({ route: idOf(r), applied: applied.has(idOf(r)), ...r.spec })),
    authentication: (inbound.authenticator?.sources ?? []).map((p) => ({ policy: idOf(p), ...p.spec })),
    authorization: ((inbound.dryRun ?? inbound.authorizer)?.sources ?? []).map((p) => ({ policy: idOf(p), ...p.spec })),
    // What the inbound speaks to the service: HTTP/1.1 (HTTP/2 calls translated), HTTP/2, or each call's own version.
    upstreamHttp: inbound.upstreamHttp ?? "caller's",
    rateLimit: inbound.limiter && { policy: idOf(inbound.limiter.source), ...inbound.limiter.source.spec, ...(inbound.limiter.source.spec.scope === "service" && { instances: inbound.limiter.instances }) },
  };
}

/** Every root of the trust bundle in force, by trust domain: during a root rotation, whether this sidecar trusts the new root yet. */
export function trustedRoots(certs: WorkloadCerts) {
  return certs.bundle.trustDomains().flatMap((trustDomain) =>
    certs.bundle.roots(trustDomain).map((root) => ({
      trustDomain,
      subject: root.subject,
      notAfter: root.notAfter.toISOString(),
      // Bun's own hasher: node:crypto would cost the sidecar its module's memory for one digest.
      sha256: new Bun.CryptoHasher("sha256").update(root.der).digest("hex"),
    })),
  );
}
