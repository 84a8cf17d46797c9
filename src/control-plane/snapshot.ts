/**
 * The config one proxy gets: the Services it may call (with the backends of their
 * HTTPRoutes) and its own, with the endpoints registered for them merged in, the DestinationPolicies
 * and HTTPRoutes for those services, the
 * AuthorizationPolicies, RequestAuthentications and RateLimitPolicy its own inbound
 * enforces, and the trust bundle.
 * Documents go out as written, so the proxy validates them itself and can refuse a
 * version with a reason. The version is a hash of the content: every replica computes
 * the same version for the same state, so a proxy that moves to another replica
 * resumes where it was instead of being sent everything again.
 */
import { createHash } from "node:crypto";
import type { ControlPlaneView, StoredManifest } from "./view.ts";
import type { EndpointRecord } from "./registration.ts";
import { routeServices, type HTTPRoute } from "../config/kinds/http-route.ts";

export interface Subscriber {
  namespace: string;
  service: string;
  /** Services it calls, as `name` (own namespace) or `name.namespace`; undefined: every service. */
  calls?: string[];
}

export interface ProxySnapshot {
  version: string;
  documents: Record<string, unknown>[];
  bundle: string;
}

/** What every subscriber's snapshot is cut from, built once per view content revision. */
interface ViewIndex {
  revision: number;
  /** Manifests sorted by id, so documents come out in a stable order on every replica. */
  sorted: StoredManifest[];
  /** Registered endpoints by `service.namespace`, sorted by key. */
  endpoints: Map<string, EndpointRecord[]>;
}

const indexes = new WeakMap<ControlPlaneView, ViewIndex>();

function indexOf(view: ControlPlaneView): ViewIndex {
  const cached = indexes.get(view);
  if (cached && cached.revision === view.contentRevision) return cached;
  const endpoints = new Map<string, EndpointRecord[]>();
  for (const [, ep] of [...view.endpoints].sort(([a], [b]) => (a < b ? -1 : 1))) {
    const key = `${ep.service}.${ep.namespace}`;
    const list = endpoints.get(key);
    if (list) list.push(ep);
    else endpoints.set(key, [ep]);
  }
  const index: ViewIndex = {
    revision: view.contentRevision,
    sorted: [...view.manifests].sort(([a], [b]) => (a < b ? -1 : 1)).map(([, m]) => m),
    endpoints,
  };
  indexes.set(view, index);
  return index;
}

export function snapshotFor(view: ControlPlaneView, sub: Subscriber, bundle: string): ProxySnapshot {
  const wanted = sub.calls ? new Set(sub.calls.map((c) => (c.includes(".") ? c : `${c}.${sub.namespace}`))) : undefined;
  const { sorted, endpoints: registered } = indexOf(view);
  // A route of a service it calls sends calls to the route's backends too: they are called as well. Only those
  // routes are sent (a proxy never follows a backend's own route), so every route sent has all its Services.
  const called = wanted && new Set(wanted);
  if (wanted)
    for (const { manifest } of sorted)
      if (manifest.kind === "HTTPRoute" && called!.has(`${(manifest.spec as { service: string }).service}.${manifest.metadata.namespace}`))
        for (const { service } of routeServices(manifest as HTTPRoute)) wanted.add(`${service}.${manifest.metadata.namespace}`);
  const services: Record<string, unknown>[] = [];
  const policies: Record<string, unknown>[] = [];
  const included = new Set<string>();
  for (const { raw, manifest } of sorted) {
    if (manifest.kind !== "Service") continue;
    const key = `${manifest.metadata.name}.${manifest.metadata.namespace}`;
    // Its own Service always: its tcp ports are the only ones its inbound carries connections to.
    if (wanted && !wanted.has(key) && key !== `${sub.service}.${sub.namespace}`) continue;
    included.add(key);
    services.push(withEndpoints(raw, registered.get(key) ?? []));
  }
  /** The policies the subscriber's own inbound enforces. */
  const own: Record<string, unknown>[] = [];
  for (const { raw, manifest } of sorted) {
    const spec = manifest.spec as { service: string };
    const routed = `${spec.service}.${manifest.metadata.namespace}`;
    if (manifest.kind === "DestinationPolicy" && included.has(routed)) policies.push(raw);
    else if (manifest.kind === "HTTPRoute" && (called ?? included).has(routed)) policies.push(raw);
    else if (
      (manifest.kind === "AuthorizationPolicy" || manifest.kind === "RequestAuthentication") &&
      manifest.metadata.namespace === sub.namespace &&
      (spec.service === sub.service || spec.service === "*")
    )
      own.push(raw);
    else if (manifest.kind === "RateLimitPolicy" && manifest.metadata.namespace === sub.namespace && spec.service === sub.service) own.push(raw);
  }
  const documents = [...services, ...policies, ...own];
  const version = createHash("sha256").update(JSON.stringify({ documents, bundle })).digest("hex").slice(0, 16);
  return { version, documents, bundle };
}

/**
 * The Service document with its registered endpoints added to any static ones. Only
 * healthy endpoints are offered, unless none is: then all are, because sending to an
 * endpoint that reports trouble beats refusing every request (Envoy's panic threshold).
 */
function withEndpoints(raw: Record<string, unknown>, registered: EndpointRecord[]): Record<string, unknown> {
  if (registered.length === 0) return raw;
  const healthy = registered.filter((e) => e.healthy);
  const offered = healthy.length > 0 ? healthy : registered;
  const spec = (raw.spec ?? {}) as Record<string, unknown>;
  const statics = Array.isArray(spec.endpoints) ? (spec.endpoints as Record<string, unknown>[]) : [];
  const seen = new Set(statics.map((e) => `${e.address}:${e.port}`));
  const dynamic = offered
    .filter((e) => !seen.has(`${e.address}:${e.port}`))
    .map((e) => ({ address: e.address, port: e.port, weight: e.weight, ...(e.zone ? { zone: e.zone } : {}) }));
  return { ...raw, spec: { ...spec, endpoints: [...statics, ...dynamic] } };
}
