/** Service: a named set of ports, optionally with static endpoints for meshes without a control plane. */
import { isIP } from "node:net";
import { z } from "zod";
import { always, dnsLabel, Host, IPAddress, Port, uniqueBy, Zone } from "../common";
import { registerKind, type ManifestOf } from "../manifest";

/**
 * What the proxies carry: HTTP/1.1 (WebSocket upgrades included), HTTP/2 and gRPC on the
 * outbound listener, where each call keeps the protocol its caller speaks (HTTP/2 from its
 * first bytes) unless the port says the service speaks HTTP/1.1 (upstream-protocol.ts); and opaque TCP, through a local listener per tcp port a sidecar is told to
 * bind (ProxyConfig tcpUpstreams), or redirected from one of the Service's addresses.
 */
export const PROTOCOLS = ["http", "http2", "grpc", "tcp"] as const;

export const ServicePort = z
  .strictObject({
    name: dnsLabel("port name").describe("Name of the port, unique within the service: a DNS label."),
    port: Port.describe("Port clients address the service on."),
    protocol: z
      .enum(PROTOCOLS)
      .optional()
      .describe(
        "Protocol spoken on the port: http (HTTP/1.1, WebSocket upgrades included), http2 (h2c), grpc, or tcp (opaque bytes: a database, a queue); unset: HTTP, in the version each caller speaks (HTTP/2 is told by its first bytes). Set to http, it is what the service's sidecar speaks to the service at targetPort: an HTTP/2 call reaches the service as HTTP/1.1, translated (a gRPC call is refused: it needs HTTP/2), as Envoy does for Istio; http2 and grpc describe the service, and its calls keep their version. A tcp port is reached through a local listener the caller's sidecar binds for it (ProxyConfig tcpUpstreams), or at one of spec.addresses through mesh redirect and a --transparent sidecar, and the service's sidecar carries such connections to targetPort on the service's host, to no port the Service does not declare tcp.",
      ),
    targetPort: Port.optional().describe("Port the workload listens on; default: port. For a tcp port of a service outside the mesh (mtls: false), the port connected to on each endpoint's address."),
  })
  .describe("A port the service serves.");

export const Endpoint = z
  .strictObject({
    address: Host.describe("IPv4 or IPv6 address or hostname of an instance."),
    port: Port.describe("Port the instance listens on."),
    weight: z.number().min(0).default(1).describe("Relative share of traffic; 0 drains the instance; default 1."),
    zone: Zone.optional().describe("Locality (zone) of the instance: callers in the same zone prefer it (DestinationPolicy loadBalancer.zoneAware)."),
  })
  .describe("A static instance of the service.");

/** Why a Service cannot claim `address` (canonical), or undefined when it can. */
function unclaimable(address: string): string | undefined {
  if (address === "0.0.0.0" || address === "::") return "is the unspecified address";
  if (address.startsWith("127.") || address === "::1") return "is a loopback address, whose calls stay on their host and are never redirected";
  const first = Number(address.split(".")[0]);
  if ((isIP(address) === 4 && first >= 224 && first <= 239) || /^ff[0-9a-f]{2}:/.test(address)) return "is a multicast address";
  return undefined;
}

export const ServiceSpec = z
  .strictObject({
    ports: z
      .array(ServicePort)
      .min(1)
      .superRefine(
        uniqueBy((p) => (typeof p.name === "string" ? `"${p.name}"` : undefined), "name", "port name"),
        always,
      )
      .superRefine(
        uniqueBy((p) => (typeof p.port === "number" ? String(p.port) : undefined), "port", "port"),
        always,
      )
      .describe("Ports the service serves; at least one, names and numbers unique."),
    endpoints: z
      .array(Endpoint)
      .superRefine(
        uniqueBy(
          (e) => (typeof e.address === "string" && typeof e.port === "number" ? `${e.address}:${e.port}` : undefined),
          undefined,
          "endpoint",
        ),
        always,
      )
      .optional()
      .describe("Static instances, for configs without a control plane; unique by address and port."),
    addresses: z
      .array(IPAddress.superRefine((address, ctx) => {
        const why = unclaimable(address);
        if (why !== undefined) ctx.addIssue({ code: "custom", message: `${address} ${why}; a Service cannot claim it` });
      }))
      .min(1)
      .superRefine((addresses, ctx) => {
        addresses.forEach((a, i) => {
          const first = addresses.indexOf(a);
          if (first < i) ctx.addIssue({ code: "custom", path: [i], message: `duplicate address ${a} (also at index ${first})` });
        });
      })
      .optional()
      .describe(
        "Virtual addresses the service is called at besides its name: a Kubernetes ClusterIP, a VIP your DNS gives its name. A call whose Host is one of them goes to this service; with mesh redirect and mesh proxy --transparent, a connection to one of them at a tcp port is carried as opaque TCP. No two Services share one.",
      ),
    mtls: z
      .boolean()
      .default(true)
      .describe("false: the endpoints are outside the mesh and speak plain HTTP; no identity is checked. Default true."),
    identity: dnsLabel("identity")
      .optional()
      .describe("Service account in the service's SPIFFE ID (spiffe://<trust-domain>/ns/<namespace>/sa/<identity>); default metadata.name."),
  })
  .describe("A service: its ports, and optionally static endpoints and identity.");

export const Service = registerKind({
  kind: "Service",
  spec: ServiceSpec,
  description: "A service in the mesh: the ports it serves, its identity and, without a control plane, its endpoints.",
  resolve: (spec, metadata) => ({
    ...spec,
    ports: spec.ports.map((p) => ({ ...p, targetPort: p.targetPort ?? p.port })),
    identity: spec.identity ?? metadata.name,
  }),
});
export type Service = ManifestOf<typeof Service>;

/** Each address a Service claims that an earlier one claimed: the later item, the address, and the earlier item. */
export function sharedAddresses<T>(items: readonly T[], serviceOf: (item: T) => Service): { item: T; address: string; first: T }[] {
  const claimed = new Map<string, T>();
  const shared: { item: T; address: string; first: T }[] = [];
  for (const item of items)
    for (const address of serviceOf(item).spec.addresses ?? []) {
      const first = claimed.get(address);
      if (first === undefined) claimed.set(address, item);
      else if (first !== item) shared.push({ item, address, first });
    }
  return shared;
}
