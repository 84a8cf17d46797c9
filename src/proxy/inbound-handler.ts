/**
 * Inbound requests on the raw mTLS listener: the caller's SPIFFE ID, proven in the TLS
 * handshake of this very connection, is handed to the local service in
 * `x-mesh-client-id` after any copy the caller sent was removed (headers.ts), and the
 * request is relayed over the pooled HTTP/1.1 client without building Request or
 * Response objects. Before that it passes admission (inbound-admission.ts): its end-user
 * token verified, its path put in the normal form the service receives, the service's
 * authorization policies, its rate limits. WebSocket upgrades pass the path and policy checks here, then are tunnelled to
 * the loopback server of inbound.ts, which admits them again (taking their rate-limit
 * token there, once) and carries them.
 */
import { boundedMemo } from "../core/bounded-memo.ts";
import { causeOf, CLIENT_CLOSED_STATUS, errorParts, INTERNAL_ERROR, type ErrorParts, type ReplyCause } from "./errors.ts";
import { CLIENT_ID_HEADER, RELAY_SKIPS, skipFor } from "./headers.ts";
import type { InflightTracker } from "./inflight.ts";
import { RequestRecorder, statusClass, type ProxyMetrics } from "./metrics.ts";
import { peerService } from "./peer-service.ts";
import { RelaySink } from "./relay-sink.ts";
import { Http1Pool, proxyFailureOf } from "./transport/h1/index.ts";
import { callAbortListener, type AbortLike, type AbortListener } from "./transport/h1/abort.ts";
import { addedLines, prepareRelayed, type PreparedRequest } from "./transport/h1/request-head.ts";
import type { ConnectionHandler, ServerRequest } from "./transport/h1-server/connection.ts";
import type { H2Server } from "./h2/h2-server.ts";
import type { LoopbackTunnels } from "./transport/h1-server/loopback-tunnel.ts";
import { requestFraming } from "./transport/h1-server/request-framing.ts";
import type { Responder } from "./transport/h1-server/responder.ts";
import type { UpstreamHealth } from "./upstream-health.ts";
import { eventNow } from "../core/clock.ts";
import type { AccessLog } from "./access-log.ts";
import type { ActiveSpan, Tracer } from "./tracing/tracer.ts";
import type { IdleStreams } from "./h2/idle-streams.ts";
import { admitInbound, authenticateInbound, headersSeen, isRefusal, type InboundPolicies } from "./inbound-admission.ts";
import { ANONYMOUS, type Authenticated } from "./authentication/authenticator.ts";
import type { RequestHead } from "./transport/h1/request-parse.ts";

export interface InboundHandlerDeps {
  pool: Http1Pool;
  /** The local service's origin, for error messages. */
  origin: string;
  metrics: ProxyMetrics;
  tracker: InflightTracker;
  tunnels: LoopbackTunnels;
  /** Where connections that open with the HTTP/2 preface go (./h2/h2-server.ts). */
  h2: H2Server;
  health?: UpstreamHealth;
  accessLog?: AccessLog;
  /** The service's own policies of the config in force. */
  policies: () => InboundPolicies;
  /** Spans for requests; none when tracing is off. */
  tracer?: Tracer;
  /** Response bodies that go silent for the stream idle timeout are cut. */
  idleStreams?: IdleStreams;
}

export function inboundHandler(deps: InboundHandlerDeps): ConnectionHandler {
  const { metrics } = deps;
  const recorder = new RequestRecorder(metrics, "inbound", false);
  const log = deps.accessLog;
  return {
    refused: (reason) => metrics.refused.inc({ direction: "inbound", reason }),
    upgrade: (conn, initial) => deps.tunnels.open(conn, initial),
    http2: (conn, initial) => deps.h2.accept(conn, initial),
    refuseUpgrade(head, peer) {
      const refusal = upgradeRefusal(head, peer!);
      if (refusal !== undefined) {
        const cause = causeOf(refusal);
        metrics.websocketUpgrades.inc({ direction: "inbound", peer: peerService(peer!), status: statusClass(refusal.status) });
        recorder.answeredItself(peerService(peer!), cause);
        log?.request("inbound", head, refusal.status, 0, peer!, undefined, cause);
        const span = deps.tracer?.begin(head.fields);
        if (span !== undefined) deps.tracer!.end(span, "server", head, refusal.status, peer!, cause.error);
      }
      return refusal;
    },
    request(req: ServerRequest, res: Responder) {
      const policies = deps.policies();
      const authn = authenticateInbound(metrics, policies, req.peer!, req.head.fields, req.head.connectionTokens);
      // A token not seen before is verified first: the connection holds its next request meanwhile.
      if (authn instanceof Promise) forwardOnceVerified(req, res, policies, authn);
      else forward(req, res, policies, authn, eventNow());
    },
  };

  /**
   * Forwards the request once its token is verified; nothing goes to the service for a
   * caller that left meanwhile. Its own function: a closure in request() would have the
   * engine allocate a scope on every request, closure made or not (bench:alloc counts it).
   */
  function forwardOnceVerified(req: ServerRequest, res: Responder, policies: InboundPolicies, verifying: Promise<Authenticated | ErrorParts>): void {
    const started = eventNow();
    verifying
      .then((authn) => {
        if (!res.finished) return forward(req, res, policies, authn, started);
        reportEnd(req, CLIENT_CLOSED_STATUS, started);
      })
      .catch(() => answerUnforwarded(req, res, INTERNAL_ERROR, started));
  }

  /** Admits the request, or answers the refusal (authentication's, or admission's), then relays it to the service. */
  function forward(req: ServerRequest, res: Responder, policies: InboundPolicies, authn: Authenticated | ErrorParts, started: number): void {
    const caller = req.peer!;
    const head = req.head;
    const refusal = isRefusal(authn) ? authn : admission(head, caller, policies, authn);
    if (refusal !== undefined) return answerUnforwarded(req, res, refusal, started);
    const { strip, claimLines } = authn as Authenticated;
    // The span's traceparent replaces the caller's, so the service continues from it.
    const span = deps.tracer?.begin(head.fields);
    let prepared: PreparedRequest;
    try {
      const tail = span === undefined ? claimLines : span.line + claimLines;
      prepared = prepareRelayed(head, skipFor(strip?.skips ?? RELAY_SKIPS, span), identityLine(caller), requestFraming(head), req.bytes, tail);
    } catch (err) {
      metrics.refused.inc({ direction: "inbound", reason: "header-value" });
      return answerUnforwarded(req, res, errorParts("bad-request", (err as Error).message, { connection: "close" }), started, span);
    }
    // Logging and tracing are a subclass: without either the relay is the plain one.
    const peer = peerService(caller);
    const relay = log || span ? new ObservedInboundRelay(res, peer, deps, recorder, req, log, span) : new InboundRelay(res, peer, deps, recorder);
    relay.idleStreams = deps.idleStreams;
    deps.pool.dispatch(prepared, req.body, relay, relay);
  }

  /** Why an upgrade is refused before its tunnel opens, if it is. */
  function upgradeRefusal(head: RequestHead, peer: string): ErrorParts | undefined {
    const sent = head.pathAndQuery;
    const policies = deps.policies();
    // The loopback server behind the tunnel admits the upgrade again, and takes its rate-limit token.
    // A token may need verifying first, which this answer cannot wait for: with a RequestAuthentication
    // in force the path alone is checked here, and the loopback server verifies and applies the policies.
    const checked = policies.authenticator === undefined ? policies : { pending: policies.pending, keepEscapedSlashes: policies.keepEscapedSlashes };
    const refusal = admission(head, peer, checked, ANONYMOUS, false);
    if (refusal !== undefined || head.pathAndQuery === sent) return refusal;
    // The tunnel relays the upgrade's own bytes: only a path that needs no rewriting reaches the service as matched.
    metrics.refused.inc({ direction: "inbound", reason: "path" });
    return errorParts("bad-request", "a WebSocket upgrade's path must be in normal form");
  }

  /** Answers a request the service never saw, and counts, logs and traces it like one it did. */
  function answerUnforwarded(req: ServerRequest, res: Responder, answer: ErrorParts, started: number, span?: ActiveSpan): void {
    res.respond(answer.status, answer.headers, answer.body);
    reportEnd(req, answer.status, started, span, causeOf(answer));
  }

  /** The request is over without reaching the service: its metrics, log line and span; `cause`: why the proxy answered it. */
  function reportEnd(req: ServerRequest, status: number, started: number, span = deps.tracer?.begin(req.head.fields, started), cause?: ReplyCause): void {
    const ms = eventNow() - started;
    const peer = peerService(req.peer!);
    recorder.record(peer, status, ms);
    if (cause !== undefined) recorder.answeredItself(peer, cause);
    log?.request("inbound", req.head, status, ms, req.peer!, undefined, cause);
    if (span !== undefined) deps.tracer!.end(span, "server", req.head, status, req.peer!, cause?.error);
  }

  /**
   * Puts the head's target in the normal form the service receives; undefined, or the
   * answer that refuses it. `authn`: the end user, and the headers the proxy leaves off
   * and adds, which rules see as the service will.
   */
  function admission(head: RequestHead, caller: string, policies: InboundPolicies, authn: Authenticated, limited = true): ErrorParts | undefined {
    const checked = limited ? policies : { ...policies, limiter: undefined };
    const seen = headersSeen(head.fields, head.connectionTokens, authn);
    const admitted = admitInbound(metrics, checked, caller, head.method, head.pathAndQuery, seen?.fields ?? head.fields, seen?.dropped ?? head.connectionTokens, authn.user);
    if (typeof admitted !== "string") return admitted;
    if (admitted !== head.pathAndQuery) head.pathAndQuery = admitted;
    return undefined;
  }
}

/** The identity line a caller's requests carry; callers are few, requests many. */
const identityLine = boundedMemo(1024, (caller: string) => addedLines(`${CLIENT_ID_HEADER}: ${caller}\r\n`));

/**
 * One relayed request to the local service and the relay of its response (RelaySink):
 * one object per request. It is also the request's abort signal: a caller that leaves
 * before the response head (its connection or stream closed) cancels the service's
 * request, so work nobody waits for stops, and a caller cannot keep more requests running
 * than it holds connections or streams open.
 */
class InboundRelay extends RelaySink implements AbortLike {
  aborted = false;
  reason: unknown = undefined;
  protected readonly started = eventNow();
  /** The exchange in flight: the one listener. */
  private listener: AbortListener | undefined;

  constructor(
    res: Responder,
    private readonly peer: string,
    protected readonly deps: InboundHandlerDeps,
    private readonly recorder: RequestRecorder,
  ) {
    super(res);
    deps.tracker.start();
  }

  addEventListener(_type: "abort", listener: AbortListener): void {
    this.listener = listener;
  }

  removeEventListener(_type: "abort", listener: AbortListener): void {
    if (this.listener === listener) this.listener = undefined;
  }

  protected clientLeftEarly(): void {
    if (this.aborted) return;
    this.aborted = true;
    this.reason = new DOMException("the caller closed its connection before the response", "AbortError");
    const listener = this.listener;
    this.listener = undefined;
    if (listener !== undefined) callAbortListener(listener);
  }

  protected relayFailedEarly(err: Error): void {
    // Nobody to answer, and not the service's failure.
    if (this.aborted) return this.finish(CLIENT_CLOSED_STATUS, 0);
    this.deps.health?.onResult(false);
    const e = errorParts(proxyFailureOf(err), `local service ${this.deps.origin}: ${err.message}`);
    this.res.respond(e.status, e.headers, e.body);
    this.finish(e.status, 0, causeOf(e));
  }

  protected relayDone(): void {
    this.deps.health?.onResult(this.status < 500);
    this.finish(this.status, this.headAt);
  }

  /** `cause`: why the proxy answered the request itself, when it did. */
  protected finish(status: number, headAt: number, cause?: ReplyCause): void {
    // Latency is to the response head, as the metric says; the request counts once it is over.
    this.recorder.record(this.peer, status, (headAt || eventNow()) - this.started);
    if (cause !== undefined) this.recorder.answeredItself(this.peer, cause);
    this.deps.tracker.end();
  }
}

/** An inbound relay that also writes the request's access-log line and ends its span, with the caller's SPIFFE ID. */
class ObservedInboundRelay extends InboundRelay {
  constructor(
    res: Responder,
    peer: string,
    deps: InboundHandlerDeps,
    recorder: RequestRecorder,
    private readonly req: ServerRequest,
    private readonly log: AccessLog | undefined,
    private readonly span: ActiveSpan | undefined,
  ) {
    super(res, peer, deps, recorder);
  }

  protected override finish(status: number, headAt: number, cause?: ReplyCause): void {
    super.finish(status, headAt, cause);
    const { head, peer } = this.req;
    this.log?.request("inbound", head, status, (headAt || eventNow()) - this.started, peer!, undefined, cause);
    if (this.span !== undefined) this.deps.tracer!.end(this.span, "server", head, status, peer!, cause?.error);
  }
}
