/** ProxyConfig: settings of one sidecar proxy. */
import { z } from "zod";
import { TimerDuration } from "../duration";
import { always, dnsLabel, Host, listener, listenerClash, loopbackListener, MaxConnections, noListenerClash, NonEmpty, optionalListener, Port, TrustDomain, Zone } from "../common";
import { nameProblem } from "../../pki/spiffe";
import { registerKind, type ManifestOf } from "../manifest";

export const LOG_LEVELS = ["trace", "debug", "info", "warn", "error", "fatal"] as const;

const UPSTREAM_EXAMPLE = "http://127.0.0.1:8080";
/** What probes and scrapers off the host use, since the admin listener is loopback only. */
export const PROXY_ADMIN_ELSEWHERE = "probes and scrapers elsewhere use the status listener (--status: /live, /ready, /metrics)";

/** The local application: a bare http://host:port; anything else would be silently dropped. */
export const Upstream = z.string().superRefine((value, ctx) => {
  const fail = (message: string) => ctx.addIssue({ code: "custom", message });
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return fail(`expected a URL like ${UPSTREAM_EXAMPLE}, got "${value}"`);
  }
  if (url.protocol !== "http:") return fail(`expected an http:// URL like ${UPSTREAM_EXAMPLE}, got "${value}"`);
  if (url.username || url.password) return fail("must not hold a user name or password");
  if (url.pathname !== "/" || url.search || url.hash) return fail(`expected only scheme, host and port, like ${UPSTREAM_EXAMPLE}`);
  if (url.port === "0") return fail(`expected port 1-65535, got "${value}"`);
});

/** An https:// URL with no path, as a control-plane replica is addressed (the --control-plane and --bootstrap-url flags too). */
export const HttpsOrigin = z.string().superRefine((value, ctx) => {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return ctx.addIssue({ code: "custom", message: `expected a URL like https://10.0.0.1:15010, got "${value}"` });
  }
  if (url.protocol !== "https:") ctx.addIssue({ code: "custom", message: `expected an https:// URL (the control plane speaks only TLS), got "${value}"` });
  else if (url.pathname !== "/" || url.search || url.hash || url.username || url.password) ctx.addIssue({ code: "custom", message: "expected only scheme, host and port" });
  else if (url.port === "0") ctx.addIssue({ code: "custom", message: `expected port 1-65535, got "${value}"` });
});

/** Where a sidecar sends trace spans: an OTLP/HTTP endpoint. */
export const CollectorUrl = z.string().superRefine((value, ctx) => {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return ctx.addIssue({ code: "custom", message: `expected a URL like http://otel-collector:4318/v1/traces, got "${value}"` });
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") ctx.addIssue({ code: "custom", message: `expected an http:// or https:// URL, got "${value}"` });
  else if (url.username || url.password) ctx.addIssue({ code: "custom", message: "must not hold a user name or password" });
});

/** Percent of new traces a sidecar samples. */
export const SamplingPercent = z.number().min(0).max(100);

export const TracingSection = z
  .strictObject({
    collector: CollectorUrl.describe("OTLP/HTTP endpoint spans are sent to as JSON, e.g. http://otel-collector:4318/v1/traces."),
    sampling: SamplingPercent.default(1).describe("Percent of new traces sampled (0-100); a request's own sampled flag is always followed; default 1."),
  })
  .describe("Trace spans for every request, in W3C Trace Context, sent to an OpenTelemetry collector.");

/** A Service this sidecar calls: `name` (in any namespace, as a Host header names it) or `name.namespace` (the --calls flag too). */
export const CalledService = z.string().superRefine((value, ctx) => {
  const parts = value.split(".");
  const problem = parts.length > 2 ? `"${value}": expected name or name.namespace` : parts.map((p) => nameProblem("service", p)).find((p) => p);
  if (problem) ctx.addIssue({ code: "custom", message: problem });
});

/** The `mesh proxy --control-plane …` flags, in the file. */
export const ControlPlaneSection = z
  .strictObject({
    urls: z.array(HttpsOrigin).min(1).describe("The control-plane replicas' mTLS API, e.g. https://10.0.0.1:15010; one per replica."),
    bootstrapUrl: HttpsOrigin.optional().describe("Where to trade a join token for a first certificate; default: the first URL's host, port 15012."),
    joinTokenFile: NonEmpty.optional().describe("Join token for the first certificate; not needed once the certs directory holds one."),
    trustBundle: NonEmpty.optional().describe("The trust bundle (PEM) the control plane's certificate must chain to; default: bundle.pem in the certs directory."),
    advertise: Host.optional().describe("Address other sidecars reach this one at; default: the inbound address, or 127.0.0.1 if it is a wildcard."),
    calls: z.array(CalledService).min(1).optional().describe("The services this one calls (name or name.namespace); default every service."),
  })
  .describe("Follow a control plane for certificates, endpoints and config, as the --control-plane flags do.");
export type ControlPlaneSection = z.output<typeof ControlPlaneSection>;

/** What the inbound does with `%2F` and `%5C` in a request path. */
export const ESCAPED_SLASHES = ["refuse", "keep"] as const;
export type EscapedSlashes = (typeof ESCAPED_SLASHES)[number];
export const ESCAPED_SLASHES_HELP =
  "What the inbound does with %2F and %5C in a path: refuse (400, the default: a service that decodes them into separators would read a path other than the one rules matched), or keep them as data, for a service that never reads them as separators (GitLab's project paths); rules then see them as data too, so a rule on /admin/* does not match /admin%2Fkeys.";

/** Where a redirected connection bound for an address no Service has goes (--transparent). */
export const UNKNOWN_DESTINATIONS = ["refuse", "passthrough"] as const;
export type UnknownDestinations = (typeof UNKNOWN_DESTINATIONS)[number];
export const UNKNOWN_DESTINATIONS_HELP =
  "With transparent: what becomes of a redirected connection bound for an address no Service has. refuse (the default): it is read as a call, and one to no known Service is answered 404 no-route; passthrough (Istio's ALLOW_ANY): unless its first request names a mesh Service by Host, it goes where it was going, as plain TCP, as if no sidecar were there.";

export const TcpUpstreamSpec = z
  .strictObject({
    service: CalledService.describe("The Service: name, or name.namespace."),
    port: Port.describe("Its port, one declared with protocol tcp."),
    bindAddress: Host.default("127.0.0.1").describe("Address of the local listener the application connects to; default 127.0.0.1."),
    bindPort: Port.describe("Port of the local listener: the application connects to bindAddress:bindPort as if to the service."),
  })
  .describe("An opaque TCP upstream: a local listener whose connections are carried to the Service's tcp port, over mTLS to its sidecars.");

const CERT_FILES = ["cert", "key", "ca"] as const;

/** Either a directory holding the three files, or the three paths; never a mix. */
export const CertSource = z
  .strictObject({
    dir: NonEmpty.optional().describe("Directory holding the certificate, key and CA bundle."),
    cert: NonEmpty.optional().describe("Path of the certificate chain (PEM)."),
    key: NonEmpty.optional().describe("Path of the private key (PEM)."),
    ca: NonEmpty.optional().describe("Path of the trust bundle: CA certificates (PEM)."),
  })
  .superRefine((certs, ctx) => {
    const set = CERT_FILES.filter((f) => certs[f] !== undefined);
    if (certs.dir !== undefined && set.length > 0)
      ctx.addIssue({ code: "custom", path: ["dir"], message: `set either dir or ${set.join(", ")}, not both` });
    else if (certs.dir === undefined && set.length === 0)
      ctx.addIssue({ code: "custom", message: "set dir, or cert, key and ca" });
    else if (set.length > 0)
      for (const f of CERT_FILES)
        if (certs[f] === undefined) ctx.addIssue({ code: "custom", path: [f], message: `required with ${set.join(" and ")}` });
  }, always);

export const ProxyConfigSpec = z
  .strictObject({
    service: dnsLabel("service").optional().describe("Service this sidecar fronts; default metadata.name."),
    namespace: dnsLabel("namespace").optional().describe("Namespace of the service; default metadata.namespace."),
    zone: Zone.optional().describe("Locality of this instance (e.g. eu-west-1a): registered with its endpoint, and its calls prefer endpoints of the same zone; none unless set."),
    upstream: Upstream.describe(`The local application, as http://host:port (e.g. ${UPSTREAM_EXAMPLE}).`),
    inbound: listener("0.0.0.0", 15006, "Listener for mTLS traffic from other sidecars."),
    outbound: listener("127.0.0.1", 15001, "Listener for the application's outgoing calls."),
    admin: loopbackListener("127.0.0.1", 15000, "Listener for health, readiness, metrics and the running config; loopback only.", PROXY_ADMIN_ELSEWHERE),
    status: optionalListener("0.0.0.0", 15021, "Listener for /live, /ready and /metrics only, for probes and scrapers on the pod network; none unless set."),
    trustDomain: TrustDomain.default("mesh.local").describe('Trust domain of SPIFFE IDs; default "mesh.local".'),
    certs: CertSource.optional().describe("Where the sidecar's certificate, key and CA bundle are: dir, or cert, key and ca."),
    accessLog: NonEmpty.optional().describe('Write one JSON line per request, inbound and outbound, to this path (appended), or "-" for stdout; none unless set.'),
    tracing: TracingSection.optional().describe("Spans for every request, sent to an OpenTelemetry collector (the --trace flags, which win); none unless set."),
    logLevel: z.enum(LOG_LEVELS).default("info").describe("Least severe level logged: trace, debug, info, warn, error or fatal; default info."),
    drainTimeout: TimerDuration.prefault("30s").describe('How long to let open requests finish on shutdown; default "30s".'),
    streamIdleTimeout: TimerDuration.prefault("5m").describe('How long an HTTP/2 stream (a gRPC call) may carry nothing either way before it is reset, and an HTTP/1.1 response body nothing before it is cut, as Envoy\'s stream_idle_timeout; "0s" never; default "5m".'),
    outboundDrainDelay: TimerDuration.prefault("0s").describe('How long after SIGTERM the outbound listener keeps taking the service\'s new calls at least, for a service that calls out while it shuts down; within drainTimeout; default "0s" (it closes once the inbound requests have finished).'),
    controlPlane: ControlPlaneSection.optional().describe("Follow a control plane for certificates, endpoints and config (the --control-plane flags, which win); none unless set."),
    healthPath: z
      .string()
      .regex(/^\//, "expected a path like /healthz")
      .optional()
      .describe("Path on the upstream checked before each heartbeat to the control plane; default: health judged from traffic."),
    escapedSlashes: z.enum(ESCAPED_SLASHES).default("refuse").describe(ESCAPED_SLASHES_HELP),
    maxConnections: MaxConnections.describe("Connections the inbound and outbound listeners hold together before closing new ones at accept; default half the open-files limit."),
    transparent: z
      .boolean()
      .default(false)
      .describe(
        "The outbound listener takes connections mesh redirect sends it: a connection to a Service's address (spec.addresses) at one of its tcp ports is carried as opaque TCP, any other is read as HTTP. Reads each connection's original destination (Linux); default false.",
      ),
    unknownDestinations: z.enum(UNKNOWN_DESTINATIONS).default("refuse").describe(UNKNOWN_DESTINATIONS_HELP),
    tcpUpstreams: z
      .array(TcpUpstreamSpec)
      .optional()
      .describe("Opaque TCP upstreams (a database, a queue): one local listener each, as Consul's upstreams with local_bind_port; the --tcp-upstream flags replace them."),
  })
  .superRefine(noListenerClash(["inbound", "outbound", "admin", "status"]), always)
  .superRefine((spec, ctx) => {
    if (!Array.isArray(spec.tcpUpstreams)) return;
    const listeners: Record<string, { address: string; port: number }> = { inbound: spec.inbound, outbound: spec.outbound, admin: spec.admin, ...(spec.status && { status: spec.status }) };
    spec.tcpUpstreams.forEach((u, i) => {
      if (typeof u !== "object" || u === null) return;
      const bind = { address: u.bindAddress, port: u.bindPort };
      const taken = Object.keys(listeners).find((other) => listenerClash({ [other]: listeners[other]!, bind }, [other, "bind"]));
      if (taken) ctx.addIssue({ code: "custom", path: ["tcpUpstreams", i, "bindPort"], message: `port ${u.bindPort} is also used by ${taken}` });
      listeners[`tcpUpstreams[${i}]`] = bind;
    });
  }, always)
  .superRefine((spec, ctx) => {
    if (spec.outboundDrainDelay > spec.drainTimeout)
      ctx.addIssue({ code: "custom", path: ["outboundDrainDelay"], message: `${spec.outboundDrainDelay} ms is longer than drainTimeout (${spec.drainTimeout} ms), which ends every drain` });
  })
  .describe("Settings of a sidecar proxy.");

export const ProxyConfig = registerKind({
  kind: "ProxyConfig",
  spec: ProxyConfigSpec,
  description: "Settings of one sidecar proxy: the service it fronts, its listeners, certificates and logging.",
  resolve: (spec, metadata) => ({ ...spec, service: spec.service ?? metadata.name, namespace: spec.namespace ?? metadata.namespace }),
});
export type ProxyConfig = ManifestOf<typeof ProxyConfig>;
