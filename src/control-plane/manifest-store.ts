/**
 * Applying, listing and deleting manifests in the store. A batch is validated whole
 * before anything is written — every document against its schema, every reference
 * against the batch and the store — so a bad manifest never replaces a good one.
 * Kinds that configure one local process (ProxyConfig, ControlPlaneConfig) are refused:
 * they belong in that process's --config, not in the mesh's shared state.
 */
import { parseManifest, type Manifest } from "../config/manifest.ts";
import "../config/kinds/index.ts";
import { secondRateLimits } from "../config/kinds/rate-limit-policy.ts";
import { routeServices, type HTTPRoute } from "../config/kinds/http-route.ts";
import { sharedAddresses, type Service } from "../config/kinds/service.ts";
import type { Store } from "../store/store.ts";
import { manifestKey } from "./keys.ts";
import type { ControlPlaneView } from "./view.ts";

export const SHARED_KINDS = new Set(["Service", "DestinationPolicy", "AuthorizationPolicy", "RateLimitPolicy", "RequestAuthentication", "HTTPRoute"]);
const POLICY_KINDS = new Set(["DestinationPolicy", "AuthorizationPolicy", "RateLimitPolicy", "RequestAuthentication"]);

/** The Services a manifest names in its namespace, with the field naming each: a policy's spec.service ("*" names none), a route's service and backends. */
function referencedServices(m: Manifest): { field: string; service: string }[] {
  if (m.kind === "HTTPRoute") return routeServices(m as HTTPRoute);
  if (!POLICY_KINDS.has(m.kind)) return [];
  const service = (m.spec as { service: string }).service;
  return service === "*" ? [] : [{ field: "spec.service", service }];
}

export interface SubmittedDocument {
  /** Where it came from, for errors: `file#doc`. */
  source: string;
  manifest: unknown;
}

export type ApplyOutcome = "created" | "configured" | "unchanged";

export interface ApplyResult {
  ok: boolean;
  errors: string[];
  applied: { kind: string; namespace: string; name: string; outcome: ApplyOutcome }[];
}

export async function applyDocuments(store: Store, view: ControlPlaneView, docs: SubmittedDocument[]): Promise<ApplyResult> {
  const errors: string[] = [];
  const valid: { source: string; raw: Record<string, unknown>; manifest: Manifest }[] = [];
  const seen = new Map<string, string>();
  for (const d of docs) {
    const parsed = parseManifest(d.manifest);
    if (!parsed.ok) {
      for (const i of parsed.issues) errors.push(`${d.source}${i.path ? ` ${i.path}` : ""}: ${i.message}`);
      continue;
    }
    const m = parsed.manifest;
    if (!SHARED_KINDS.has(m.kind)) {
      errors.push(`${d.source} kind: ${m.kind} configures one process; pass it to that process with --config`);
      continue;
    }
    const id = `${m.kind}/${m.metadata.namespace}/${m.metadata.name}`;
    const earlier = seen.get(id);
    if (earlier) errors.push(`${d.source} metadata.name: duplicate ${m.kind} "${m.metadata.namespace}/${m.metadata.name}", first at ${earlier}`);
    seen.set(id, d.source);
    valid.push({ source: d.source, raw: d.manifest as Record<string, unknown>, manifest: m });
  }
  for (const v of valid) {
    const ns = v.manifest.metadata.namespace;
    for (const { field, service } of referencedServices(v.manifest))
      if (!seen.has(`Service/${ns}/${service}`) && !view.manifests.has(`Service/${ns}/${service}`))
        errors.push(`${v.source} ${field}: no Service "${service}" in namespace "${ns}"`);
  }
  errors.push(...secondRateLimitErrors(view, valid), ...secondRouteErrors(view, valid), ...sharedAddressErrors(view, valid));
  if (errors.length > 0) return { ok: false, errors, applied: [] };

  const applied: ApplyResult["applied"] = [];
  for (const v of valid) {
    const { kind, metadata } = v.manifest;
    const key = manifestKey(kind, metadata.namespace, metadata.name);
    const value = JSON.stringify(v.raw);
    const current = await store.get(key);
    const outcome: ApplyOutcome = !current ? "created" : current.value === value ? "unchanged" : "configured";
    if (outcome !== "unchanged") await store.put(key, value);
    applied.push({ kind, namespace: metadata.namespace, name: metadata.name, outcome });
  }
  return { ok: true, errors: [], applied };
}

type Submitted = { source: string; manifest: Manifest };
/** A manifest a batch is checked against: submitted (with its source), or stored (none). */
type Candidate = { source: string | undefined; manifest: Manifest };

/** The stored manifests of `kind` the batch does not replace, then the batch's own, in order. */
function storedThenSubmitted(view: ControlPlaneView, batch: Submitted[], kind: string): Candidate[] {
  const batchIds = new Set(batch.map((v) => `${v.manifest.kind}/${v.manifest.metadata.namespace}/${v.manifest.metadata.name}`));
  const stored = [...view.manifests].filter(([id, { manifest: m }]) => m.kind === kind && !batchIds.has(id)).map(([, { manifest }]) => ({ source: undefined, manifest }));
  return [...stored, ...batch.filter((v) => v.manifest.kind === kind)];
}

/** An address a submitted Service claims that another Service (stored and not replaced, or earlier in the batch) has. */
function sharedAddressErrors(view: ControlPlaneView, batch: Submitted[]): string[] {
  return sharedAddresses(storedThenSubmitted(view, batch, "Service"), (v) => v.manifest as Service).map(
    ({ item, address, first }) => `${item.source} spec.addresses: ${address} is ${first.source ?? `Service "${first.manifest.metadata.namespace}/${first.manifest.metadata.name}"`}'s already; no two Services share an address`,
  );
}

/** A second RateLimitPolicy for a service, in the batch or beside one stored (and not replaced by the batch). */
function secondRateLimitErrors(view: ControlPlaneView, batch: Submitted[]): string[] {
  return secondRateLimits(storedThenSubmitted(view, batch, "RateLimitPolicy"), (v) => v.manifest).map(
    ({ item, first, service }) => `${item.source} spec.service: Service "${service}" already has ${first.source ?? `RateLimitPolicy "${first.manifest.metadata.name}"`}; a service takes one`,
  );
}

/** A second HTTPRoute for a service, in the batch or beside one stored (and not replaced by the batch): a call takes one route. */
function secondRouteErrors(view: ControlPlaneView, batch: Submitted[]): string[] {
  const batchIds = new Set(batch.map((v) => `${v.manifest.kind}/${v.manifest.metadata.namespace}/${v.manifest.metadata.name}`));
  const first = new Map<string, string>();
  for (const [id, { manifest: m }] of view.manifests)
    if (m.kind === "HTTPRoute" && !batchIds.has(id)) first.set(`${m.metadata.namespace}/${(m.spec as { service: string }).service}`, `HTTPRoute "${m.metadata.name}"`);
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

export type DeleteResult = { ok: true } | { ok: false; status: 404 | 409; error: string };

export async function deleteManifest(store: Store, view: ControlPlaneView, kind: string, namespace: string, name: string): Promise<DeleteResult> {
  if (kind === "Service") {
    const users = [...view.manifests.values()].filter(({ manifest: m }) => m.metadata.namespace === namespace && referencedServices(m).some((r) => r.service === name));
    if (users.length > 0)
      return { ok: false, status: 409, error: `Service "${namespace}/${name}" is used by ${users.map((u) => `${u.manifest.kind} "${u.manifest.metadata.name}"`).join(", ")}; delete that first` };
  }
  const deleted = await store.delete(manifestKey(kind, namespace, name));
  return deleted ? { ok: true } : { ok: false, status: 404, error: `no ${kind} "${namespace}/${name}"` };
}

export function listManifests(view: ControlPlaneView, kind?: string, namespace?: string, name?: string): Record<string, unknown>[] {
  return [...view.manifests.entries()]
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .filter(([, { manifest: m }]) => (!kind || m.kind === kind) && (!namespace || m.metadata.namespace === namespace) && (!name || m.metadata.name === name))
    .map(([, { raw }]) => raw);
}
