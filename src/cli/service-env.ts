/**
 * The environment `mesh run` gives its service: outgoing HTTP through the sidecar,
 * loopback calls direct, where the sidecar is, and where each TCP upstream's listener is.
 */
import { hostPort } from "../core/ip-address.ts";

/** Loopback names a service reaches without the sidecar. */
const LOCAL = ["localhost", "127.0.0.1", "::1"];

export interface SidecarAddress {
  service: string;
  outbound: { address: string; port: number };
  admin: { address: string; port: number };
  /** The TCP upstreams' local listeners: the Service and port each stands for, and where it is bound. */
  tcp?: { service: string; port: number; address: string; boundPort: number }[];
}

/** `MESH_TCP_POSTGRES_5432` for postgres:5432 (`orders-db.shop` → `ORDERS_DB_SHOP`): where to dial it, for a listener on port 0 too. */
export function tcpEnvName(service: string, port: number): string {
  return `MESH_TCP_${service.toUpperCase().replace(/[^A-Z0-9]/g, "_")}_${port}`;
}

/** `host:port` a local process can dial: a wildcard listen address becomes loopback, IPv6 is bracketed. */
export function dialable(address: string, port: number): string {
  const host = address === "0.0.0.0" ? "127.0.0.1" : address === "::" ? "::1" : address;
  return hostPort(host, port);
}

export function serviceEnv(base: Record<string, string | undefined>, sidecar: SidecarAddress): Record<string, string> {
  const outbound = dialable(sidecar.outbound.address, sidecar.outbound.port);
  const proxyUrl = `http://${outbound}`;
  // Keep whatever the caller already exempted, and add loopback.
  const given = (base.NO_PROXY ?? base.no_proxy ?? "").split(",").map((s) => s.trim());
  const noProxy = [...new Set([...given, ...LOCAL].filter(Boolean))].join(",");
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(base)) if (v !== undefined) env[k] = v;
  return {
    ...env,
    HTTP_PROXY: proxyUrl,
    http_proxy: proxyUrl,
    NO_PROXY: noProxy,
    no_proxy: noProxy,
    MESH_SERVICE: sidecar.service,
    MESH_OUTBOUND: outbound,
    MESH_ADMIN: dialable(sidecar.admin.address, sidecar.admin.port),
    ...Object.fromEntries((sidecar.tcp ?? []).map((u) => [tcpEnvName(u.service, u.port), dialable(u.address, u.boundPort)])),
  };
}
