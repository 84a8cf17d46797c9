/** The control plane's workload identity, which sidecars expect of it before they trust it. */
import { formatSpiffeId, workloadId } from "../pki/spiffe.ts";

export const SYSTEM_NAMESPACE = "mesh-system";
export const CONTROL_PLANE_SERVICE = "control-plane";

/** Whether namespace/service is the control plane's own: sidecars trust it as the control plane, so no workload is given it. */
export function isControlPlane(namespace: string, service: string): boolean {
  return namespace === SYSTEM_NAMESPACE && service === CONTROL_PLANE_SERVICE;
}

export function controlPlaneId(trustDomain: string): string {
  return formatSpiffeId(workloadId(trustDomain, SYSTEM_NAMESPACE, CONTROL_PLANE_SERVICE));
}
