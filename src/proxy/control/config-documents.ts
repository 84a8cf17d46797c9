/**
 * Validates the documents of a config version before any of it is used, the same way
 * a config file is checked: every schema, and every policy's service present. The
 * reason for a refusal goes back to the control plane in the acknowledgement. Also how
 * such a version and the sidecar's static config combine.
 */
import type { AuthorizationPolicy } from "../../config/kinds/authorization-policy.ts";
import { routeServices, type HTTPRoute } from "../../config/kinds/http-route.ts";
import type { DestinationPolicy } from "../../config/kinds/destination-policy.ts";
import { secondRateLimits, type RateLimitPolicy } from "../../config/kinds/rate-limit-policy.ts";
import type { RequestAuthentication } from "../../config/kinds/request-authentication.ts";
import { sharedAddresses, type Service } from "../../config/kinds/service.ts";
import { parseManifest, type Manifest } from "../../config/manifest.ts";
import "../../config/kinds/index.ts";

export interface ProxyDocuments {
  services: Service[];
  policies: DestinationPolicy[];
  /** The policies of the proxy's own service, enforced on its inbound. */
  authorization: AuthorizationPolicy[];
  rateLimits: RateLimitPolicy[];
  authentication: RequestAuthentication[];
  /** HTTPRoutes of the services the proxy calls, applied on its outbound. */
  routes: HTTPRoute[];
}

export class ConfigRejected extends Error {
  override readonly name = "ConfigRejected";
}

export function parseConfigDocuments(documents: unknown[]): ProxyDocuments {
  const problems: string[] = [];
  const services: Service[] = [];
  const policies: DestinationPolicy[] = [];
  const authorization: AuthorizationPolicy[] = [];
  const rateLimits: RateLimitPolicy[] = [];
  const authentication: RequestAuthentication[] = [];
  const routes: HTTPRoute[] = [];
  const placed: PlacedManifest[] = [];
  documents.forEach((doc, i) => {
    const parsed = parseManifest(doc);
    if (!parsed.ok) {
      for (const issue of parsed.issues) problems.push(`document ${i}${issue.path ? ` ${issue.path}` : ""}: ${issue.message}`);
      return;
    }
    const m = parsed.manifest;
    placed.push({ where: `${m.kind} ${m.metadata.namespace}/${m.metadata.name}`, manifest: m });
    if (m.kind === "Service") services.push(m as Service);
    else if (m.kind === "DestinationPolicy") policies.push(m as DestinationPolicy);
    else if (m.kind === "AuthorizationPolicy") authorization.push(m as AuthorizationPolicy);
    else if (m.kind === "RateLimitPolicy") rateLimits.push(m as RateLimitPolicy);
    else if (m.kind === "RequestAuthentication") authentication.push(m as RequestAuthentication);
    else if (m.kind === "HTTPRoute") routes.push(m as HTTPRoute);
    else problems.push(`document ${i} kind: ${m.kind} is not part of a proxy's config`);
  });
  problems.push(...crossDocumentProblems(placed));
  if (problems.length) throw new ConfigRejected(problems.join("; "));
  return { services, policies, authorization, rateLimits, authentication, routes };
}

/** A manifest of one config, and how a message names where it is (`file#doc`, `Kind namespace/name`). */
export interface PlacedManifest {
  where: string;
  manifest: Manifest;
}

/**
 * What the manifests of one config break together, each message led by where it is: a
 * DestinationPolicy or a route naming a Service the config lacks, a second RateLimitPolicy
 * or HTTPRoute for one service, two Services sharing an address. A config file and a
 * version pushed by the control plane are held to the same rules.
 */
export function crossDocumentProblems(items: readonly PlacedManifest[]): string[] {
  const of = (kind: string) => items.filter((i) => i.manifest.kind === kind);
  const services = of("Service");
  const known = new Set(services.map((i) => serviceKey(i.manifest.metadata.name, i.manifest.metadata.namespace)));
  const missing = (service: string, namespace: string) => (known.has(serviceKey(service, namespace)) ? undefined : `no Service "${service}" in namespace "${namespace}"`);
  const problems: string[] = [];
  for (const { where, manifest } of of("DestinationPolicy")) {
    const why = missing((manifest as DestinationPolicy).spec.service, manifest.metadata.namespace);
    if (why) problems.push(`${where} spec.service: ${why}`);
  }
  for (const { item } of secondRateLimits(of("RateLimitPolicy"), (i) => i.manifest))
    problems.push(`${item.where} spec.service: a second RateLimitPolicy for "${(item.manifest as RateLimitPolicy).spec.service}" in namespace "${item.manifest.metadata.namespace}"`);
  const routed = new Set<string>();
  for (const { where, manifest } of of("HTTPRoute")) {
    const route = manifest as HTTPRoute;
    const ns = route.metadata.namespace;
    for (const { field, service } of routeServices(route)) {
      const why = missing(service, ns);
      if (why) problems.push(`${where} ${field}: ${why}`);
    }
    const key = serviceKey(route.spec.service, ns);
    if (routed.has(key)) problems.push(`${where} spec.service: a second HTTPRoute for "${route.spec.service}" in namespace "${ns}"`);
    routed.add(key);
  }
  for (const { item, address, first } of sharedAddresses(services, (i) => i.manifest as Service))
    problems.push(`${item.where} spec.addresses: ${address} is ${first.where}'s already; no two Services share an address`);
  return problems;
}

const serviceKey = (service: string, namespace: string) => `${service}.${namespace}`;
const nameKey = (m: { metadata: { name: string; namespace: string } }) => `${m.metadata.namespace}/${m.metadata.name}`;

/**
 * A control-plane version combined with the static config: a static Service, and the
 * DestinationPolicy or RateLimitPolicy for it, stays unless the control plane defines
 * that service (or its limits); static AuthorizationPolicies and RequestAuthentications
 * stay beside the control plane's unless it has one of the same name, so a local deny is
 * never dropped.
 */
export function withStatic(dynamic: ProxyDocuments, statics: ProxyDocuments): ProxyDocuments {
  const services = new Set(dynamic.services.map((s) => serviceKey(s.metadata.name, s.metadata.namespace)));
  const limited = new Set(dynamic.rateLimits.map((p) => serviceKey(p.spec.service, p.metadata.namespace)));
  const named = new Set(dynamic.authorization.map(nameKey));
  const namedAuthn = new Set(dynamic.authentication.map(nameKey));
  const routed = new Set(dynamic.routes.map((r) => serviceKey(r.spec.service, r.metadata.namespace)));
  return {
    services: [...dynamic.services, ...statics.services.filter((s) => !services.has(serviceKey(s.metadata.name, s.metadata.namespace)))],
    policies: [...dynamic.policies, ...statics.policies.filter((p) => !services.has(serviceKey(p.spec.service, p.metadata.namespace)))],
    authorization: [...dynamic.authorization, ...statics.authorization.filter((p) => !named.has(nameKey(p)))],
    authentication: [...dynamic.authentication, ...statics.authentication.filter((p) => !namedAuthn.has(nameKey(p)))],
    rateLimits: [...dynamic.rateLimits, ...statics.rateLimits.filter((p) => !limited.has(serviceKey(p.spec.service, p.metadata.namespace)))],
    routes: [...dynamic.routes, ...statics.routes.filter((r) => !routed.has(serviceKey(r.spec.service, r.metadata.namespace)))],
  };
}

/**
 * What withStatic() leaves a static Service without: an address the control plane's own
 * Services claim (the control plane's keeps it). One message per address, for the log.
 */
export function staticAddressesTaken(dynamic: ProxyDocuments, statics: ProxyDocuments): string[] {
  const named = new Set(dynamic.services.map((s) => serviceKey(s.metadata.name, s.metadata.namespace)));
  const kept = statics.services.filter((s) => !named.has(serviceKey(s.metadata.name, s.metadata.namespace)));
  const origin = new Set(kept);
  return sharedAddresses([...dynamic.services, ...kept], (s) => s)
    .filter((c) => origin.has(c.item) && !origin.has(c.first))
    .map((c) => `static Service ${c.item.metadata.namespace}/${c.item.metadata.name}: ${c.address} is the control plane's Service ${c.first.metadata.namespace}/${c.first.metadata.name}'s, which keeps it`);
}
