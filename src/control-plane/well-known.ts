/** The control plane's workload identity, which sidecars expect of it before they trust it. */
import { formatSpiffeId, workloadId } from "../pki/spiffe.ts";

export const SYSTEM_NAMESPACE = "mesh-system";
export const CONTROL_PLANE_SERVICE = "control-plane";

export function controlPlaneId(trustDomain: string): string {
  return formatSpiffeId(workloadId(trustDomain, SYSTEM_NAMESPACE, CONTROL_PLANE_SERVICE));
}
