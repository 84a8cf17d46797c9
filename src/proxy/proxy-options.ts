/**
 * What a sidecar is started with: startProxy's options (proxy.ts), each said once here,
 * where mesh proxy's flags and config file land (../cli/proxy.ts). Apart from proxy.ts so
 * that the assembly reads without the list of settings.
 */
import type { AuthorizationPolicy } from "../config/kinds/authorization-policy.ts";
import type { DestinationPolicy } from "../config/kinds/destination-policy.ts";
import type { HTTPRoute } from "../config/kinds/http-route.ts";
import type { EscapedSlashes } from "../config/kinds/proxy-config.ts";
import type { RateLimitPolicy } from "../config/kinds/rate-limit-policy.ts";
import type { RequestAuthentication } from "../config/kinds/request-authentication.ts";
import type { Service } from "../config/kinds/service.ts";
import type { Logger } from "../core/log.ts";
import type { AccessLog } from "./access-log.ts";
import type { WorkloadCerts } from "./certs.ts";
import type { SavedConfig } from "./control/saved-config.ts";
import type { TcpUpstream } from "./tcp/outbound-tcp.ts";

export interface Listen {
  address: string;
  port: number;
}

export interface ProxyOptions {
  service: string;
  namespace: string;
  /** This instance's locality: its calls prefer endpoints of the same zone (zones.ts). */
  zone?: string;
  upstream: URL;
  inbound: Listen;
  outbound: Listen;
  admin: Listen;
  /** Listener for /live, /ready and /metrics only (probes, scrapers); none when absent. */
  status?: Listen;
  certs: WorkloadCerts;
  services: Service[];
  policies: DestinationPolicy[];
  /** Policies of the static config; those for this service are enforced on the inbound, with the control plane's. */
  authorization: AuthorizationPolicy[];
  rateLimits: RateLimitPolicy[];
  /** End-user token rules of the static config (none when absent). */
  authentication?: RequestAuthentication[];
  /** HTTPRoutes of the services this proxy calls. */
  routes?: HTTPRoute[];
  drainTimeoutMs: number;
  /** How long a drain keeps the outbound listener accepting at least (a service calling out while it shuts down); at most drainTimeoutMs. */
  outboundDrainDelayMs?: number;
  /** Path on the upstream checked actively for health; without it, health is judged from traffic. */
  healthPath?: string;
  maxBodyBytes: number;
  /** An HTTP/2 stream that carries nothing either way for this long is reset; 0: never (default 5 minutes, Envoy's). */
  streamIdleTimeoutMs?: number;
  /** One JSON line per request, inbound and outbound; none when absent. */
  accessLog?: AccessLog;
  /** A span per request, inbound and outbound, sent to an OTLP/HTTP collector; `sampling` is the share of new traces, 0 to 1. */
  tracing?: { collector: URL; sampling: number };
  /** The sidecar follows a control plane: not ready until a config from it is applied, and refusing inbound requests until then unless `savedConfig` gives it policies. */
  awaitsConfig?: boolean;
  /** The control plane's config this sidecar last applied, served until the control plane is heard again. */
  savedConfig?: SavedConfig;
  /** Connections the inbound and outbound listeners may hold together; default half the open-files limit. */
  maxConnections?: number;
  /** What the inbound does with `%2F` and `%5C` in a path: refuse the request (default), or keep them as data. */
  escapedSlashes?: EscapedSlashes;
  /** Opaque TCP upstreams: a local listener each. */
  tcpUpstreams?: TcpUpstream[];
  /** The outbound listener takes connections mesh redirect sends it (a Service address's tcp port carried as TCP). */
  transparent?: boolean;
  /** With `transparent`: one bound for an address no Service has goes there, unless its first request names a mesh Service. */
  passthrough?: boolean;
  log: Logger;
}

/** Envoy's stream_idle_timeout: a gRPC stream quiet for longer is taken for abandoned. */
export const DEFAULT_STREAM_IDLE_TIMEOUT_MS = 300_000;
