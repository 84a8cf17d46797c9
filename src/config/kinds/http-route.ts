/**
 * HTTPRoute: where calls to a service go, by what they ask (the Gateway API's HTTPRoute
 * for a mesh, Istio's VirtualService, Linkerd's HTTPRoute): a share of its traffic to a
 * canary, requests with a header or a path prefix to another version. The callers'
 * sidecars apply it on their outbound, before an endpoint is picked.
 */
import { z } from "zod";
import { always, dnsLabel } from "../common";
import { durationSchema, TimerDuration } from "../duration";
import { registerKind, type ManifestOf } from "../manifest";
import { isPlainHeaderValue } from "../../core/header-value";
import { cgiName } from "../../core/cgi-name";
import { GrpcRetryStatuses, RetryAttempts, RetryBackoff, RetryOnList, RetryStatusCodes } from "./destination-policy";
import { HOP_BY_HOP_HEADERS, IDENTITY_HEADERS, MESH_ANSWER_HEADERS } from "../../core/header-names";

const HeaderName = z.string().regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, "expected an HTTP header name").transform((h) => h.toLowerCase());
const PathValue = z.string().regex(/^\/[^?#\s]*$/, 'expected a path starting with "/", without query');

export const RouteMatch = z
  .strictObject({
    path: z
      .strictObject({
        exact: PathValue.optional().describe("The path, exactly (without the query)."),
        prefix: PathValue.optional().describe('Paths under this one, by whole segments: "/v2" matches /v2 and /v2/x, not /v2x.'),
      })
      .superRefine((p, ctx) => {
        if ((p.exact === undefined) === (p.prefix === undefined)) ctx.addIssue({ code: "custom", message: "give exact or prefix, one of the two" });
      }, always)
      .optional()
      .describe("The request's path."),
    method: z.string().regex(/^[A-Za-z]+$/, "expected an HTTP method").transform((m) => m.toUpperCase()).optional().describe("The request's method."),
    headers: z
      .array(
        z.strictObject({
          name: HeaderName.describe("Header name."),
          value: z
            .string()
            .refine(isPlainHeaderValue, "expected a header value: printable ASCII, no space at either end")
            .describe('Its value, exactly; a header sent on several lines is read as one value, joined with ", ".'),
        }),
      )
      .min(1)
      .optional()
      .describe("Headers the request must carry, each with this value."),
  })
  .describe("A request this rule takes: every part given must match.");

/**
 * Headers a route may not change: the proxy's own (hop-by-hop, identity, framing, the
 * span's traceparent), and idempotency-key, which would make every request it is set on
 * one retries may send again.
 */
export const UNMODIFIABLE_HEADERS: ReadonlySet<string> = new Set([...HOP_BY_HOP_HEADERS, ...IDENTITY_HEADERS, "host", "content-length", "expect", "traceparent", "tracestate", "idempotency-key"]);

const GRPC_OUTCOME = ["grpc-status", "grpc-message", "grpc-status-details-bin"];

/**
 * Response headers a route may not change: the proxy's own (hop-by-hop, identity, framing),
 * the ones it answers callers with (x-mesh-error, x-mesh-overflow), which a caller must be
 * able to trust came from a proxy, and a gRPC call's outcome in a trailers-only answer,
 * which the sidecars count and retry by and the client must see as the service gave it.
 */
export const UNMODIFIABLE_RESPONSE_HEADERS: ReadonlySet<string> = new Set([...HOP_BY_HOP_HEADERS, ...IDENTITY_HEADERS, "content-length", ...MESH_ANSWER_HEADERS, ...GRPC_OUTCOME]);

/** Changes to a request's or a response's headers, less `unmodifiable`. */
function headerModifier(unmodifiable: ReadonlySet<string>, what: "request" | "response") {
  // "_" and other separators read as "-", as the proxy reads them everywhere.
  const name = HeaderName.transform(cgiName).superRefine((h, ctx) => {
    if (!unmodifiable.has(h)) return;
    const whose = GRPC_OUTCOME.includes(h) ? "a gRPC call's outcome, the service's to give" : "the proxy's own to set or remove";
    ctx.addIssue({ code: "custom", message: `"${h}" is ${whose}; a route cannot change it` });
  });
  const line = z.strictObject({
    name: name.describe("Header name."),
    value: z.string().refine(isPlainHeaderValue, "expected a header value: printable ASCII, no space at either end").describe("Its value."),
  });
  return z
    .strictObject({
      set: z.array(line).min(1).optional().describe(`Headers set to these values, replacing any the ${what} carries.`),
      add: z.array(line).min(1).optional().describe(`Headers added, beside any of the same name the ${what} carries.`),
      remove: z.array(name).min(1).optional().describe("Headers removed, in any spelling."),
    })
    .superRefine((m, ctx) => {
      const seen = new Map<string, string>();
      for (const list of ["set", "add", "remove"] as const)
        (Array.isArray(m[list]) ? m[list] : []).forEach((entry, i) => {
          const named = typeof entry === "string" ? entry : entry?.name;
          if (typeof named !== "string") return;
          const earlier = seen.get(named);
          if (earlier !== undefined) ctx.addIssue({ code: "custom", path: [list, i], message: `"${named}" is in ${earlier} already: name a header once` });
          else seen.set(named, list);
        });
    }, always);
}

export const HeaderModifier = headerModifier(UNMODIFIABLE_HEADERS, "request").describe("Changes to a request's headers (the Gateway API's RequestHeaderModifier).");
export const ResponseHeaderModifier = headerModifier(UNMODIFIABLE_RESPONSE_HEADERS, "response").describe("Changes to a response's headers (the Gateway API's ResponseHeaderModifier).");

const Percent = z.number().min(0).max(100);

export const FaultInjection = z
  .strictObject({
    delay: z
      .strictObject({
        fixed: durationSchema(TimerDuration.refine((ms) => ms > 0 && ms <= 300_000, "expected a delay above 0 and at most 5m").describe("How long a delayed call waits before it is sent.")),
        percent: Percent.default(100).describe("Share of the rule's calls delayed, 0-100; default 100."),
      })
      .optional()
      .describe("Calls held before they are sent."),
    abort: z
      .strictObject({
        status: z.int().min(400).max(599).describe("The status answered (a gRPC call gets the gRPC status it maps to, as any proxy answer)."),
        percent: Percent.default(100).describe("Share of the rule's calls answered so, 0-100; default 100."),
      })
      .optional()
      .describe("Calls answered by the caller's sidecar, never sent."),
  })
  .superRefine((f, ctx) => {
    if (f.delay === undefined && f.abort === undefined) ctx.addIssue({ code: "custom", message: "give delay, abort or both" });
  }, always)
  .describe("Faults injected into the calls a rule takes, to test how callers cope (Istio's HTTPFaultInjection): a delay, then an abort, each rolled per call.");

export const RouteRetries = z
  .strictObject({
    attempts: RetryAttempts.optional().describe("Most retries per request, after the first try; 0 disables retries."),
    retryOn: RetryOnList.optional().describe("Failures retried: connect-failure and refused (any method), reset (only idempotent requests)."),
    statusCodes: RetryStatusCodes.optional().describe("Response statuses retried, for idempotent requests only."),
    grpcStatuses: GrpcRetryStatuses.optional().describe("gRPC statuses of a trailers-only response retried, for any call."),
    backoff: RetryBackoff.optional().describe("Backoff between tries, whole: a field left out takes its DestinationPolicy default, not the backend's."),
  })
  .superRefine((r, ctx) => {
    if (Object.values(r).every((v) => v === undefined)) ctx.addIssue({ code: "custom", message: "give attempts, retryOn, statusCodes, grpcStatuses or backoff" });
  }, always)
  .describe(
    "Retries of the requests a rule takes (Istio's per-route retries, the Gateway API's HTTPRoute retry): each field given replaces the backend's DestinationPolicy retries field, the rest are the backend's. The backend's retry budget and breaker still cap them.",
  );

export const RequestMirror = z
  .strictObject({
    service: dnsLabel("service").describe("A Service in the route's namespace that gets the copies."),
    percent: Percent.default(100).describe("Share of the rule's calls copied, 0-100; default 100."),
  })
  .describe(
    "A copy of each call the rule takes sent to another service, its answer dropped (Istio's mirroring, the Gateway API's RequestMirror): the copy's Host or :authority ends in -shadow, it is never retried, and the caller never waits for it. An HTTP/1.1 call is copied with its body only when the whole body (up to 64 KiB) came with its head; an HTTP/2 one with up to 64 KiB of its body, past which the copy is reset.",
  );

export const BackendRef = z
  .strictObject({
    service: dnsLabel("service").describe("A Service in the route's namespace."),
    weight: z.int().min(0).max(1_000_000).default(1).describe("Its share of the rule's requests, against the other backends' weights; default 1."),
  })
  .describe("Where a share of the rule's requests go.");

export const RouteRule = z
  .strictObject({
    matches: z.array(RouteMatch).min(1).optional().describe("Requests the rule takes: any one match; omitted, every request."),
    backends: z
      .array(BackendRef)
      .min(1)
      .superRefine((b, ctx) => {
        if (Array.isArray(b) && b.length > 0 && !b.some((r) => (r?.weight ?? 1) > 0)) ctx.addIssue({ code: "custom", message: "every weight is 0: give one backend a share" });
      }, always)
      .describe("Where its requests go, split by weight."),
    requestHeaders: HeaderModifier.optional().describe("Headers set, added or removed on the requests the rule takes, by the caller's sidecar, before they leave."),
    responseHeaders: ResponseHeaderModifier.optional().describe(
      "Headers set, added or removed on the responses the service sends to the requests the rule takes (HTTP/1.1 and HTTP/2; not a sidecar's own answers, which carry x-mesh-error, nor WebSocket upgrades), by the caller's sidecar, before the caller gets them.",
    ),
    timeouts: z
      .strictObject({
        request: TimerDuration.optional().describe('Longest from sending a request the rule takes until its response headers arrive, retries included, instead of the backend\'s DestinationPolicy timeouts.request; "0s" none.'),
        backendRequest: TimerDuration.optional().describe("Longest one try may wait for its response headers, instead of the backend's DestinationPolicy timeouts.perTry."),
      })
      .superRefine((t, ctx) => {
        if (t.request === undefined && t.backendRequest === undefined) ctx.addIssue({ code: "custom", message: "give request, backendRequest or both" });
        if (typeof t.request === "number" && typeof t.backendRequest === "number" && t.request > 0 && t.backendRequest > t.request)
          ctx.addIssue({ code: "custom", path: ["backendRequest"], message: "must be at most request" });
      }, always)
      .optional()
      .describe("The Gateway API's HTTPRoute timeouts, for the requests this rule takes."),
    retries: RouteRetries.optional().describe("How the requests the rule takes are retried, instead of the backend's DestinationPolicy retries."),
    mirror: RequestMirror.optional().describe("Where copies of the calls the rule takes go (not WebSocket upgrades), by the caller's sidecar."),
    fault: FaultInjection.optional().describe("Faults injected into the requests the rule takes (not WebSocket upgrades), by the caller's sidecar."),
  })
  .describe("Requests that match, where they go, and how their headers change.");

export const HTTPRouteSpec = z
  .strictObject({
    service: dnsLabel("service").describe("The Service, in this namespace, whose callers' requests are routed."),
    rules: z.array(RouteRule).min(1).describe("Tried in order; the first that matches decides. A request no rule takes goes to the service itself."),
  })
  .describe("Where calls to a service go: weighted backends, by path, method and headers.");

export const HTTPRoute = registerKind({
  kind: "HTTPRoute",
  spec: HTTPRouteSpec,
  description: "Where calls to a service go, applied by the callers' sidecars: a weighted split (canary), or requests matched by path, method or header sent to another service.",
});
export type HTTPRoute = ManifestOf<typeof HTTPRoute>;
export type HTTPRouteRule = HTTPRoute["spec"]["rules"][number];

/** Every Service a route names: the routed one first, then each rule's backends and mirror. */
export function routeServices(route: HTTPRoute): { field: string; service: string }[] {
  return [
    { field: "spec.service", service: route.spec.service },
    ...route.spec.rules.flatMap((r, i) => [
      ...r.backends.map((b, j) => ({ field: `spec.rules[${i}].backends[${j}].service`, service: b.service })),
      ...(r.mirror ? [{ field: `spec.rules[${i}].mirror.service`, service: r.mirror.service }] : []),
    ]),
  ];
}
