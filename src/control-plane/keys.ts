/**
 * Where the control plane keeps things in the store. One prefix per concern, so a
 * replica watches exactly what it serves from, and keys sort the way they are listed.
 */
const ROOT = "/mesh/";

export const PREFIX = {
  manifests: `${ROOT}manifests/`,
  endpoints: `${ROOT}endpoints/`,
  proxies: `${ROOT}proxies/`,
  joinTokens: `${ROOT}join-tokens/`,
  replicas: `${ROOT}replicas/`,
} as const;

/**
 * Rewritten by every manifest write, in the same commit (Store.commit's guard): a replica
 * writes only if no other manifest write went in since the state it validated against.
 * Beside the manifests, not under them: no manifest is ever named so.
 */
export const MANIFESTS_GUARD = `${ROOT}manifests-guard`;

export function manifestKey(kind: string, namespace: string, name: string): string {
  return `${PREFIX.manifests}${kind}/${namespace}/${name}`;
}

export function endpointKey(namespace: string, service: string, address: string, port: number): string {
  return `${endpointsOf(namespace, service)}${address}:${port}`;
}

/** The prefix of one service's endpoint keys. */
export function endpointsOf(namespace: string, service: string): string {
  return `${PREFIX.endpoints}${namespace}/${service}/`;
}

export function proxyKey(proxyId: string): string {
  return `${PREFIX.proxies}${proxyId}`;
}

/** Where the last refusal by a proxy of the service that is not registered yet is kept: one per service (no `address:port`, so no clash). */
export function unregisteredRefusalKey(namespace: string, service: string): string {
  return `${PREFIX.proxies}${namespace}/${service}/unregistered`;
}

export function joinTokenKey(jti: string): string {
  return `${PREFIX.joinTokens}${jti}`;
}

export function replicaKey(id: string): string {
  return `${PREFIX.replicas}${id}`;
}
