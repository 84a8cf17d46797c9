/**
 * Outbound requests on the raw listener: the local service's calls to other services,
 * as an HTTP proxy (`HTTP_PROXY=http://127.0.0.1:15001`: absolute-form targets, or
 * CONNECT and then the calls themselves) or by Host. Resolve the service, pick an endpoint, send over the destination's mTLS pool
 * (outbound-call.ts: retries, breaker, deadline), and relay the response without
 * building Request or Response objects. WebSocket upgrades are tunnelled to the
 * loopback server of outbound.ts, which carries them.
 */
import { resolveHost, type Destination, type Snapshot } from "./destinations.ts";
import { routedDestination, type RouteChoice } from "./routing.ts";
import type { PickContext } from "./endpoint.ts";
import { causeOf, CLIENT_CLOSED_STATUS, errorParts, INTERNAL_ERROR, type ErrorParts, type ReplyCause } from "./errors.ts";
import { RELAY_SKIPS, skipFor } from "./headers.ts";
import type { InflightTracker } from "./inflight.ts";
import { RequestRecorder, UNKNOWN_DESTINATION, type ProxyMetrics } from "./metrics.ts";
import { callDestination, type CallHandle, type CallOutcome } from "./outbound-call.ts";
import { RelaySink } from "./relay-sink.ts";
import { fieldValue, joinedFieldValue } from "./transport/h1/request-parse.ts";
import { NO_ADDED_LINES, prepareRelayed, type PreparedRequest } from "./transport/h1/request-head.ts";
import type { ConnectionHandler, ServerRequest } from "./transport/h1-server/connection.ts";
import type { H2Server } from "./h2/h2-server.ts";
import type { LoopbackTunnels } from "./transport/h1-server/loopback-tunnel.ts";
import { requestFraming } from "./transport/h1-server/request-framing.ts";
import type { Responder } from "./transport/h1-server/responder.ts";
import type { ResponseSink } from "./transport/h1/response-sink.ts";
import { eventNow } from "../core/clock.ts";
import { injectFault, type CompiledFault } from "./fault.ts";
import { mirrorCopyH1, mirrors } from "./mirror.ts";
import type { AccessLog } from "./access-log.ts";
import type { ActiveSpan, Tracer } from "./tracing/tracer.ts";
import type { IdleStreams } from "./h2/idle-streams.ts";

export interface OutboundHandlerDeps {
  snapshot: () => Snapshot;
  metrics: ProxyMetrics;
  tracker: InflightTracker;
  tunnels: LoopbackTunnels;
  /** Where connections that open with the HTTP/2 preface go (./h2/h2-server.ts). */
  h2: H2Server;
  accessLog?: AccessLog;
  /** Spans for calls; none when tracing is off. */
  tracer?: Tracer;
  /** Response bodies that go silent for the stream idle timeout are cut. */
  idleStreams?: IdleStreams;
}

function answer(res: Responder, e: ErrorParts): void {
  res.respond(e.status, e.headers, e.body);
}

export function outboundHandler(deps: OutboundHandlerDeps): ConnectionHandler {
  const { metrics, tracker } = deps;
  const recorder = new RequestRecorder(metrics, "outbound", true);
  const log = deps.accessLog;
  return {
    refused: (reason) => metrics.refused.inc({ direction: "outbound", reason }),
    upgrade: (conn, initial) => deps.tunnels.open(conn, initial),
    http2: (conn, initial) => deps.h2.accept(conn, initial),
    // The calls inside name their service themselves; the target must be one, as an absolute-form target must.
    connect(head) {
      if (resolveHost(deps.snapshot(), head.host)) return undefined;
      // Counted and logged as a call to no known Service is.
      const e = errorParts("no-route", `no service named "${head.host}" in this proxy's config (CONNECT)`);
      const cause = causeOf(e);
      recorder.record(UNKNOWN_DESTINATION, e.status, 0);
      recorder.answeredItself(UNKNOWN_DESTINATION, cause);
      log?.request("outbound", head, e.status, 0, "", undefined, cause);
      return e;
    },
    request(req: ServerRequest, res: Responder) {
      const head = req.head;
      const snapshot = deps.snapshot();
      const named = resolveHost(snapshot, head.host);
      // Answered here, before any destination: counted as a call to "unknown", logged with no peer.
      if (!named) return answerUnforwarded(req, res, errorParts("no-route", `no service named "${head.host}" in this proxy's config`), "");
      const route = snapshot.routes.size === 0 ? undefined : snapshot.routes.get(named);
      const choice = route === undefined ? undefined : routeOf(route, head);
      const dest = choice === undefined ? named : choice.dest;
      const change = choice?.requestHeaders;
      // The span's traceparent replaces the service's, so the callee's sidecar continues from it.
      const span = deps.tracer?.begin(head.fields);
      let prepared: PreparedRequest;
      try {
        prepared = prepareRelayed(head, skipFor(change?.skips ?? RELAY_SKIPS, span), change?.lines ?? NO_ADDED_LINES, requestFraming(head), req.bytes, span?.line);
      } catch (err) {
        metrics.refused.inc({ direction: "outbound", reason: "header-value" });
        return answerUnforwarded(req, res, errorParts("bad-request", (err as Error).message, { connection: "close" }), dest.name, span);
      }
      // Logging and tracing are a subclass: without either the relay is the plain one.
      const relay =
        log || span ? new ObservedOutboundRelay(res, req, dest.name, recorder, tracker, log, span, deps.tracer) : new OutboundRelay(res, req, dest.name, recorder, tracker);
      if (choice?.responseHeaders !== undefined) relay.responseEdits = choice.responseHeaders;
      // A destination in the mesh is reached through its sidecar; one outside it is a service like any other.
      relay.upstreamIsProxy = dest.spiffeId !== undefined;
      relay.idleStreams = deps.idleStreams;
      // A copy for the rule's mirror is taken now, before any of the body goes, and sent after the call.
      const mirror = choice?.mirror !== undefined && mirrors(choice.mirror) ? mirrorCopyH1(choice.mirror, req, metrics, change, span) : undefined;
      if (choice?.fault === undefined) sendCall(relay, dest, prepared, req, metrics, choice, mirror);
      else faultedCall(choice.fault, relay, dest, prepared, req, metrics, choice, mirror);
    },
  };

  /** Answers a call that never left, and counts, logs and traces it like one that did. `peer`: "" when no destination matched. */
  function answerUnforwarded(req: ServerRequest, res: Responder, e: ErrorParts, peer: string, span = deps.tracer?.begin(req.head.fields)): void {
    answer(res, e);
    const cause = causeOf(e);
    recorder.record(peer || UNKNOWN_DESTINATION, e.status, 0);
    recorder.answeredItself(peer || UNKNOWN_DESTINATION, cause);
    log?.request("outbound", req.head, e.status, 0, peer, undefined, cause);
    if (span !== undefined) deps.tracer!.end(span, "client", req.head, e.status, peer, cause.error);
  }
}

/** Sends the call (outbound-call.ts), its handle kept by the relay, then its mirror's copy; `route`: the route's choice, whose timeouts and retries replace the destination's. */
function sendCall(relay: OutboundRelay, dest: Destination, prepared: PreparedRequest, req: ServerRequest, metrics: ProxyMetrics, route: RouteChoice | undefined, mirror: (() => void) | undefined): void {
  try {
    relay.call = callDestination(dest, prepared, req.body, relay, metrics, relay, route === undefined ? dest.call : route.call);
    mirror?.();
  } catch {
    // A bug must not leave the request counted in flight (a drain would wait for it).
    relay.failed(INTERNAL_ERROR);
  }
}

/**
 * The closures below live in functions of their own: a closure in the request handler
 * would have the engine allocate its captured variables' scope on every request, closure
 * made or not (bench:alloc counts it).
 */

/** The rule of `route` that takes the request, if any. */
function routeOf(route: Parameters<typeof routedDestination>[0], head: ServerRequest["head"]): RouteChoice | undefined {
  return routedDestination(route, { method: head.method, pathAndQuery: head.pathAndQuery, header: (n) => joinedFieldValue(head.fields, n) });
}

/**
 * A call of a route rule with fault injection (fault.ts): held for its delay (a client
 * that leaves meanwhile ends it, nothing sent), then answered with the abort, or sent.
 */
function faultedCall(fault: CompiledFault, relay: OutboundRelay, dest: Destination, prepared: PreparedRequest, req: ServerRequest, metrics: ProxyMetrics, route: RouteChoice, mirror: (() => void) | undefined): void {
  const send = () => sendCall(relay, dest, prepared, req, metrics, route, mirror);
  const wait = injectFault(fault, send, (answer) => relay.failed(answer));
  if (wait !== undefined) relay.call = { cancel: () => void (wait.cancel() && relay.abandoned()) };
}

/**
 * One relayed request: how its call ends (CallOutcome), what the balancer may read of it
 * (PickContext), and the relay of the response it keeps (RelaySink), in one object per request.
 */
class OutboundRelay extends RelaySink implements CallOutcome, PickContext {
  /** The call in progress, to cancel if the caller leaves before the response head. */
  call: CallHandle | undefined;
  protected readonly started = eventNow();
  protected finished = false;
  /** Set when the proxy answered the call itself. */
  protected cause: ReplyCause | undefined = undefined;

  constructor(
    res: Responder,
    protected readonly req: ServerRequest,
    protected readonly peer: string,
    private readonly recorder: RequestRecorder,
    private readonly tracker: InflightTracker,
  ) {
    super(res);
    tracker.start();
  }

  protected clientLeftEarly(): void {
    this.call?.cancel();
  }

  abandoned(): void {
    this.finish(CLIENT_CLOSED_STATUS);
  }

  header(name: string): string | null {
    return fieldValue(this.req.head.fields, name) ?? null;
  }

  respond(): ResponseSink {
    // The head is already in: a failure now is the body's, and resets the client's connection.
    return this;
  }

  failed(error: ErrorParts): void {
    answer(this.res, error);
    this.cause = causeOf(error);
    this.finish(error.status);
  }

  protected relayFailedEarly(): void {
    this.res.abort();
  }

  protected relayDone(): void {
    // Only a relay that got its head ends here (one that failed before it calls relayFailedEarly).
    this.finish(this.status);
  }

  /** The request counts once it is over, exactly once. */
  finish(status: number): void {
    if (this.finished) return;
    this.finished = true;
    // Latency is to the response head, as the metric says.
    this.recorder.record(this.peer, status, (this.headAt || eventNow()) - this.started);
    if (this.cause !== undefined) this.recorder.answeredItself(this.peer, this.cause);
    this.tracker.end();
  }
}

/** An outbound relay that also writes the request's access-log line and ends its span when it is over. */
class ObservedOutboundRelay extends OutboundRelay {
  constructor(
    res: Responder,
    req: ServerRequest,
    peer: string,
    recorder: RequestRecorder,
    tracker: InflightTracker,
    private readonly log: AccessLog | undefined,
    private readonly span: ActiveSpan | undefined,
    private readonly tracer: Tracer | undefined,
  ) {
    super(res, req, peer, recorder, tracker);
  }

  override finish(status: number): void {
    if (this.finished) return;
    super.finish(status);
    this.log?.request("outbound", this.req.head, status, (this.headAt || eventNow()) - this.started, this.peer, undefined, this.cause);
    if (this.span !== undefined) this.tracer!.end(this.span, "client", this.req.head, status, this.peer, this.cause?.error);
  }
}
