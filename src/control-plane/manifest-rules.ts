/**
 * The rules a set of stored manifests keeps across documents: every reference names a
 * Service that is there, a service has at most one HTTPRoute and one RateLimitPolicy, no
 * two Services share an address, and a Service in use is not deleted. A change is checked
 * as the state it leaves: the manifests it keeps (`kept`: stored, less those it deletes or
 * replaces) and those it submits. Errors name a submitted document by its source and a
 * stored manifest by kind and name.
 */
import type { Manifest } from "../config/manifest.ts";
import { secondRateLimits } from "../config/kinds/rate-limit-policy.ts";
import { routeServices, type HTTPRoute } from "../config/kinds/http-route.ts";
import { sharedAddresses, type Service } from "../config/kinds/service.ts";
import type { StoredManifest } from "./view.ts";

const POLICY_KINDS = new Set(["DestinationPolicy", "AuthorizationPolicy", "RateLimitPolicy", "RequestAuthentication"]);

/** A submitted manifest, with where it came from (`file#doc`). */
export type Submitted = { source: string; manifest: Manifest };
/** A manifest a change is checked against: submitted (with its source), or stored (none). */
type Candidate = { source: string | undefined; manifest: Manifest };

export const manifestId = (m: Manifest): string => `${m.kind}/${m.metadata.namespace}/${m.metadata.name}`;

/** The Services a manifest names in its namespace, with the field naming each: a policy's spec.service ("*" names none), a route's service and backends. */
function referencedServices(m: Manifest): { field: string; service: string }[] {
  if (m.kind === "HTTPRoute") return routeServices(m as HTTPRoute);
  if (!POLICY_KINDS.has(m.kind)) return [];
  const service = (m.spec as { service: string }).service;
  return service === "*" ? [] : [{ field: "spec.service", service }];
}

/** Every rule `batch` breaks once stored beside `kept` (which holds nothing the batch replaces). */
export function batchErrors(kept: ReadonlyMap<string, StoredManifest>, batch: Submitted[]): string[] {
  const submitted = new Set(batch.map((v) => manifestId(v.manifest)));
  const errors: string[] = [];
  for (const v of batch) {
    const ns = v.manifest.metadata.namespace;
    for (const { field, service } of referencedServices(v.manifest))
      if (!submitted.has(`Service/${ns}/${service}`) && !kept.has(`Service/${ns}/${service}`))
        errors.push(`${v.source} ${field}: no Service "${service}" in namespace "${ns}"`);
  }
  return [...errors, ...secondRateLimitErrors(kept, batch), ...secondRouteErrors(kept, batch), ...sharedAddressErrors(kept, batch)];
}

/** A Service deleted while a manifest left behind (kept or submitted) still names it. */
export function deletedInUseErrors(kept: ReadonlyMap<string, StoredManifest>, batch: Submitted[], deleted: Manifest[]): string[] {
  const left = [...kept.values(), ...batch].map((c) => c.manifest);
  return deleted
    .filter((d) => d.kind === "Service")
    .flatMap(({ metadata: { namespace, name } }) => {
      const users = left.filter((m) => m.metadata.namespace === namespace && referencedServices(m).some((r) => r.service === name));
      return users.length ? [`Service "${namespace}/${name}" is used by ${users.map((u) => `${u.kind} "${u.metadata.name}"`).join(", ")}; delete that first`] : [];
    });
}

/** The kept manifests of `kind`, then the batch's own, in order. */
function keptThenSubmitted(kept: ReadonlyMap<string, StoredManifest>, batch: Submitted[], kind: string): Candidate[] {
  const stored = [...kept.values()].filter(({ manifest: m }) => m.kind === kind).map(({ manifest }) => ({ source: undefined, manifest }));
  return [...stored, ...batch.filter((v) => v.manifest.kind === kind)];
}

/** An address a submitted Service claims that another Service (kept, or earlier in the batch) has. */
function sharedAddressErrors(kept: ReadonlyMap<string, StoredManifest>, batch: Submitted[]): string[] {
  return sharedAddresses(keptThenSubmitted(kept, batch, "Service"), (v) => v.manifest as Service).map(
    ({ item, address, first }) => `${item.source} spec.addresses: ${address} is ${first.source ?? `Service "${first.manifest.metadata.namespace}/${first.manifest.metadata.name}"`}'s already; no two Services share an address`,
  );
}

/** A second RateLimitPolicy for a service, in the batch or beside one kept. */
function secondRateLimitErrors(kept: ReadonlyMap<string, StoredManifest>, batch: Submitted[]): string[] {
  return secondRateLimits(keptThenSubmitted(kept, batch, "RateLimitPolicy"), (v) => v.manifest).map(
    ({ item, first, service }) => `${item.source} spec.service: Service "${service}" already has ${first.source ?? `RateLimitPolicy "${first.manifest.metadata.name}"`}; a service takes one`,
  );
}

/** A second HTTPRoute for a service, in the batch or beside one kept: a call takes one route. */
function secondRouteErrors(kept: ReadonlyMap<string, StoredManifest>, batch: Submitted[]): string[] {
  const first = new Map<string, string>();
  for (const { manifest: m } of kept.values())
    if (m.kind === "HTTPRoute") first.set(`${m.metadata.namespace}/${(m.spec as { service: string }).service}`, `HTTPRoute "${m.metadata.name}"`);
  const errors: string[] = [];
  for (const v of batch) {
    if (v.manifest.kind !== "HTTPRoute") continue;
    const service = (v.manifest.spec as { service: string }).service;
    const key = `${v.manifest.metadata.namespace}/${service}`;
    const earlier = first.get(key);
    if (earlier) errors.push(`${v.source} spec.service: Service "${service}" already has ${earlier}; a service takes one`);
    else first.set(key, v.source);
  }
  return errors;
}
