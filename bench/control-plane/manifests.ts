/** The manifests the benchmark applies: S Services, and one DestinationPolicy changed each round. */
export const serviceName = (i: number) => `svc-${i}`;

export function serviceManifest(name: string): Record<string, unknown> {
  return { apiVersion: "mesh.dev/v1alpha1", kind: "Service", metadata: { name, namespace: "default" }, spec: { ports: [{ name: "http", port: 80 }] } };
}

/** A policy for svc-0 whose request timeout differs every round, so every proxy's snapshot changes. */
export function policyManifest(round: number): Record<string, unknown> {
  return {
    apiVersion: "mesh.dev/v1alpha1",
    kind: "DestinationPolicy",
    metadata: { name: "bench", namespace: "default" },
    spec: { service: serviceName(0), timeouts: { request: `${2 + round}s` } },
  };
}
