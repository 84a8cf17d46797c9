/**
 * DestinationPolicy: how callers treat one service — load balancing, timeouts, retries,
 * circuit breaking and outlier detection (Istio's DestinationRule, Consul's
 * service-resolver). Every field has a default, so a policy states only what differs.
 */
import { z } from "zod";
import { always, dnsLabel, NonEmpty } from "../common";
import { Duration, TimerDuration } from "../duration";
import { registerKind, type ManifestOf } from "../manifest";

export const BALANCERS = ["least-request", "round-robin", "ewma", "ring-hash"] as const;
export const RETRY_ON = ["connect-failure", "refused", "reset"] as const;
/** gRPC statuses a call may be retried on: those Envoy's `retry_on` and Linkerd's GRPCRoute retries name. */
export const GRPC_RETRY_STATUSES = ["cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable"] as const;

const Count = z.int().min(0);
const HeaderName = z.string().regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, "expected an HTTP header name");

export const HashOn = z
  .strictObject({
    header: HeaderName.optional().describe("Hash the value of this request header."),
    cookie: NonEmpty.optional().describe("Hash the value of this cookie."),
  })
  .superRefine((h, ctx) => {
    const set = [h.header, h.cookie].filter((v) => v !== undefined).length;
    if (set !== 1) ctx.addIssue({ code: "custom", message: "set exactly one of header or cookie" });
  }, always)
  .describe("What ring hash keys on: one header or one cookie. Requests without it are spread at random.");

export const LoadBalancer = z
  .strictObject({
    type: z
      .enum(BALANCERS)
      .default("least-request")
      .describe("least-request (power of two choices; default), round-robin (weighted), ewma (latency-aware) or ring-hash (sticky)."),
    hashOn: HashOn.optional().describe("For ring-hash: the header or cookie to hash; required with ring-hash."),
    minRingSize: z.int().min(1).max(1 << 20).optional().describe("For ring-hash: least number of points on the ring; default 1024."),
    ewmaDecay: Duration.optional().describe('For ewma: how fast old latencies fade; default "10s".'),
    zoneAware: z
      .boolean()
      .default(true)
      .describe(
        "A caller with a zone (--zone) sends to endpoints of its own zone, and to others only as its zone's healthy share falls below 1/1.4 of its endpoints (Envoy's overprovisioning factor) or for a retry no endpoint of its zone is left for; default true. Ring hash ignores zones: every caller puts a key on the same endpoint.",
      ),
  })
  .superRefine((lb, ctx) => {
    if (lb.type === "ring-hash" && !lb.hashOn) ctx.addIssue({ code: "custom", path: ["hashOn"], message: "required with type ring-hash" });
    if (lb.type !== "ring-hash" && lb.hashOn) ctx.addIssue({ code: "custom", path: ["hashOn"], message: "only with type ring-hash" });
    if (lb.type !== "ring-hash" && lb.minRingSize !== undefined) ctx.addIssue({ code: "custom", path: ["minRingSize"], message: "only with type ring-hash" });
    if (lb.type !== "ewma" && lb.ewmaDecay !== undefined) ctx.addIssue({ code: "custom", path: ["ewmaDecay"], message: "only with type ewma" });
  }, always)
  .prefault({})
  .describe("How an endpoint is chosen for each request.");

export const Timeouts = z
  .strictObject({
    connect: TimerDuration.prefault("5s").describe('Longest a new connection (TCP and TLS handshake) may take; default "5s".'),
    request: TimerDuration.prefault("15s").describe('Longest from sending a request until the response headers arrive, retries included; default "15s". 0 disables.'),
    perTry: TimerDuration.prefault("0s").describe(
      'Longest one try may wait for its response headers before it is given up (and retried, for an idempotent request, if retryOn has reset), within request: Istio\'s perTryTimeout; default "0s", none.',
    ),
    idle: TimerDuration.prefault("10s").describe(
      'How long an unused pooled connection stays open; keep it below the server\'s own idle timeout (a mesh inbound: 30 s); default "10s".',
    ),
    tcpIdle: TimerDuration.prefault("1h").describe(
      'How long an opaque TCP connection (a tcp port) may carry nothing either way before it is closed, by the callers\' sidecars and by the service\'s own; "0s" never; default "1h", as Envoy\'s TCP proxy.',
    ),
    tcpMaxDuration: TimerDuration.prefault("0s").describe(
      'How long an opaque TCP connection may last, busy or not, before it is reset, by the callers\' sidecars and by the service\'s own (Istio\'s maxConnectionDuration): clients reconnect, and their new connections are balanced over the endpoints there are now; "0s" never, the default.',
    ),
  })
  .prefault({})
  .describe("Timeouts of calls to this service.");

export const RetryBudgetSpec = z
  .strictObject({
    percent: z.number().min(0).max(1000).default(20).describe("Retries allowed as a percentage of requests, over 10 s; default 20."),
    minPerSecond: z.number().min(0).default(10).describe("Retries always allowed per second, so quiet services can retry; default 10."),
  })
  .prefault({})
  .describe("Caps retries to a share of traffic, so retries cannot multiply load during an outage.");

/** The fields of retries, without defaults: a DestinationPolicy defaults them, an HTTPRoute rule's retries take the backend's. */
export const RetryAttempts = Count.max(10);
export const RetryOnList = z.array(z.enum(RETRY_ON));
export const RetryStatusCodes = z.array(z.int().min(500).max(599));
export const GrpcRetryStatuses = z.array(z.enum(GRPC_RETRY_STATUSES));

export const RetryBackoff = z
  .strictObject({
    base: TimerDuration.prefault("25ms").describe('First backoff cap; doubles per retry; default "25ms".'),
    max: TimerDuration.prefault("250ms").describe('Largest backoff; default "250ms".'),
  })
  .superRefine((b, ctx) => {
    if (typeof b.base === "number" && typeof b.max === "number" && b.max < b.base) ctx.addIssue({ code: "custom", path: ["max"], message: "must be at least base" });
  }, always)
  .describe("Full-jitter exponential backoff between tries.");

export const Retries = z
  .strictObject({
    attempts: RetryAttempts.default(2).describe("Most retries per request, after the first try; default 2. 0 disables retries."),
    retryOn: RetryOnList.default([...RETRY_ON]).describe(
      "Failures retried: connect-failure and refused (the request never left; retried for any method), reset (only idempotent requests).",
    ),
    statusCodes: RetryStatusCodes.default([502, 503, 504]).describe("Response statuses retried, for idempotent requests only; default [502, 503, 504]."),
    grpcStatuses: GrpcRetryStatuses.default([]).describe(
      "gRPC statuses retried when the response carries nothing else (trailers-only), for any call: listing one says the service's calls are safe to repeat on it; default none.",
    ),
    backoff: RetryBackoff.prefault({}).describe("Full-jitter exponential backoff between tries."),
    budget: RetryBudgetSpec,
  })
  .prefault({})
  .describe("Retries: idempotent methods or requests with Idempotency-Key, never after response bytes reached the client; a request body only over HTTP/2, kept up to 64 KiB.");

export const CircuitBreakerSpec = z
  .strictObject({
    maxConnections: Count.default(1024).describe("Most open connections: HTTP, to each endpoint of the service; TCP and WebSocket, to the service; default 1024."),
    maxPendingRequests: Count.default(1024).describe("Most requests waiting for a connection; default 1024."),
    maxRequests: Count.default(1024).describe("Most requests in flight to the service; default 1024."),
    maxRetries: Count.default(1024).describe("Most retries in flight to the service, beside the retry budget; default 1024."),
  })
  .prefault({})
  .describe("Limits that refuse new work at once (503, x-mesh-overflow says which) instead of queueing behind a saturated service.");

export const OutlierDetectionSpec = z
  .strictObject({
    consecutiveFailures: z.int().min(1).default(5).describe("Failures in a row (5xx, connect errors) that eject an endpoint; default 5."),
    baseEjectionTime: TimerDuration.prefault("30s").describe('First ejection length; each new ejection is longer; default "30s".'),
    maxEjectionTime: TimerDuration.prefault("5m").describe('Longest ejection; default "5m".'),
    maxEjectionPercent: z.number().min(0).max(100).default(50).describe("Most endpoints ejected at once, as a percentage (at least one of two or more); default 50."),
    interval: TimerDuration.prefault("10s").describe('Time back in service that forgives one past ejection; default "10s".'),
  })
  .superRefine((o, ctx) => {
    if (typeof o.baseEjectionTime === "number" && typeof o.maxEjectionTime === "number" && o.maxEjectionTime < o.baseEjectionTime)
      ctx.addIssue({ code: "custom", path: ["maxEjectionTime"], message: "must be at least baseEjectionTime" });
    if (typeof o.baseEjectionTime === "number" && o.baseEjectionTime <= 0)
      ctx.addIssue({ code: "custom", path: ["baseEjectionTime"], message: "must be more than 0" });
  }, always)
  .prefault({})
  .describe("Ejects an endpoint that keeps failing, for a growing time, capped at a share of endpoints.");

export const DestinationPolicySpec = z
  .strictObject({
    service: dnsLabel("service").optional().describe("The Service, in this namespace, that the policy is for; default metadata.name."),
    loadBalancer: LoadBalancer,
    timeouts: Timeouts,
    retries: Retries,
    circuitBreaker: CircuitBreakerSpec,
    outlierDetection: OutlierDetectionSpec,
    multiplex: z
      .boolean()
      .default(true)
      .describe(
        "Requests to the service's mesh proxies share mutual-TLS connections as streams (mesh-mux/1, chosen in the TLS handshake; a peer without it gets plain connections); false gives each request in flight a connection of its own. Default true.",
      ),
  })
  .describe("How callers treat one service: balancing, timeouts, retries, circuit breaking, outlier detection.");

export const DestinationPolicy = registerKind({
  kind: "DestinationPolicy",
  spec: DestinationPolicySpec,
  description: "How callers treat one service: load balancing, timeouts, retries, circuit breaking and outlier detection.",
  resolve: (spec, metadata) => ({ ...spec, service: spec.service ?? metadata.name }),
});
export type DestinationPolicy = ManifestOf<typeof DestinationPolicy>;
export type DestinationPolicySpec = DestinationPolicy["spec"];

/** The policy of a service that has none: every default. */
export function defaultDestinationPolicy(service: string): DestinationPolicySpec {
  return DestinationPolicySpec.parse({ service }) as DestinationPolicySpec;
}
