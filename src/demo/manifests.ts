/**
 * What the demo applies to its control plane: the three Services, and a policy for
 * pricing that retries 503s on another instance and ejects one that fails three times
 * in a row for a few seconds — quick enough to watch.
 */
const API = "mesh.dev/v1alpha1";

export const DEMO_SERVICES = ["frontend", "catalog", "pricing"] as const;

function service(name: string): Record<string, unknown> {
  return { apiVersion: API, kind: "Service", metadata: { name }, spec: { ports: [{ name: "http", port: 80 }] } };
}

export const PRICING_POLICY: Record<string, unknown> = {
  apiVersion: API,
  kind: "DestinationPolicy",
  metadata: { name: "pricing" },
  spec: {
    timeouts: { request: "2s" },
    retries: { attempts: 2, statusCodes: [502, 503, 504], backoff: { base: "10ms", max: "50ms" } },
    outlierDetection: { consecutiveFailures: 3, baseEjectionTime: "5s", maxEjectionTime: "30s", maxEjectionPercent: 50, interval: "10s" },
  },
};

export function demoManifests(): Record<string, unknown>[] {
  return [...DEMO_SERVICES.map(service), PRICING_POLICY];
}
