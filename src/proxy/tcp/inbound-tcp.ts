/**
 * The callee's side of mesh-tcp/1 (wire.ts): an mTLS connection whose peer chose it in
 * ALPN names the port it is for, and is carried to the local service on that port if
 * the port is one of the service's tcp ports (never any other: the admin port, or a
 * database the service keeps to itself, stays out of reach), the caller passes the
 * service's AuthorizationPolicies as a connection (Authorizer.checkConnection) and its
 * RateLimitPolicy (a connection counts as a request). The answer byte tells the caller's
 * sidecar which; after CONNECTED the connection is the service's byte stream. The ports
 * and policies are checked again on open connections at every config change (recheck()):
 * one they now refuse is reset, as Envoy drains a connection on an RBAC change.
 */
import type { Socket } from "bun";
import type { InboundPolicies } from "../inbound-admission.ts";
import type { ProxyMetrics } from "../metrics.ts";
import { peerService } from "../peer-service.ts";
import { CarriedConnection, type CarriedResult } from "./carried.ts";
import { UpstreamLeg } from "./leg.ts";
import type { PipeReport, TcpTimeouts } from "./pipe.ts";
import type { TcpReporter } from "./report.ts";
import { Answer, ANSWER_RESULT, PREAMBLE_BYTES, portOf } from "./wire.ts";

/** How long a refused peer has to read its answer before its connection is reset. */
const REFUSED_LINGER_MS = 2_000;
/** The caller's sidecar speaks frames; the service, its own bytes. */
const CALLER_FRAMED = [true, false] as const;
/** Connecting to the service on loopback. */
const LOCAL_CONNECT_TIMEOUT_MS = 5_000;

export interface InboundTcpDeps {
  /** The service this sidecar fronts, as the access log names a connection's target. */
  service: string;
  /** The local service's host (--upstream's). */
  host: string;
  /** The service's tcp ports now (each port's targetPort): the only ones reached. */
  ports: () => ReadonlySet<number>;
  policies: () => InboundPolicies;
  metrics: ProxyMetrics;
  report: TcpReporter;
  /** A connection's time limits now: the service's own DestinationPolicy's. */
  timeouts: () => TcpTimeouts;
}

export class InboundTcp {
  private readonly open = new Set<InboundTcpConnection>();

  constructor(private readonly deps: InboundTcpDeps) {}

  get count(): number {
    return this.open.size;
  }

  /** Takes over an mTLS socket whose peer chose mesh-tcp/1; `peer`: its SPIFFE ID, proven in the handshake. */
  accept(socket: Socket<unknown>, peer: string): InboundTcpConnection {
    const conn = new InboundTcpConnection(socket, peer, this.deps, (c) => this.open.delete(c));
    this.open.add(conn);
    this.deps.report.opened();
    return conn;
  }

  /** After a config change: each open connection its ports and policies now refuse is reset. How many were. */
  recheckOpen(): number {
    let reset = 0;
    for (const conn of [...this.open]) if (conn.recheck()) reset++;
    return reset;
  }

  /** A drain's end: every connection is ended gracefully. */
  closeAll(): void {
    for (const conn of [...this.open]) conn.shutdown();
  }
}

export class InboundTcpConnection extends CarriedConnection {
  private preamble = new Uint8Array(0);
  private port = 0;
  /** The answer a refusal sends; none before the preamble was read (a peer that never named a port is only closed). */
  private refusal: Answer | undefined;

  constructor(
    client: Socket<unknown>,
    private readonly peer: string,
    private readonly deps: InboundTcpDeps,
    private readonly gone: (c: InboundTcpConnection) => void,
  ) {
    super(client);
  }

  protected override early(chunk: Uint8Array): void {
    if (this.port !== 0) return this.hold(chunk);
    const bytes = this.preamble.byteLength === 0 ? chunk : Buffer.concat([this.preamble, chunk]);
    if (bytes.byteLength < PREAMBLE_BYTES) {
      this.preamble = new Uint8Array(bytes);
      return;
    }
    this.port = portOf(bytes);
    if (bytes.byteLength > PREAMBLE_BYTES) this.hold(bytes.subarray(PREAMBLE_BYTES));
    this.decide();
  }

  private decide(): void {
    const { policies: current, metrics } = this.deps;
    const policies = current();
    if (policies.pending !== undefined) return this.answer(Answer.notReady);
    const refusal = this.refusalBy(policies);
    if (refusal !== undefined) return this.answer(refusal);
    const peer = peerService(this.peer);
    const would = policies.dryRun?.checkConnection(this.peer, this.port);
    if (would !== undefined) metrics.dryRunDenied.inc({ peer, policy: would.policy });
    const limited = policies.limiter?.admit(this.peer);
    if (limited !== undefined) {
      metrics.rateLimited.inc({ peer, limit: limited.limit });
      return this.answer(Answer.rateLimited);
    }
    new UpstreamLeg({ host: this.deps.host, port: this.port, connectTimeoutMs: LOCAL_CONNECT_TIMEOUT_MS }, this);
  }

  /**
   * The ports and policies now in force, after a config change: if they refuse this
   * connection it is reset (refused, if not yet joined), counted as that refusal. True if so.
   * Dry-run policies and rate limits are not applied again: they judged its open.
   */
  recheck(): boolean {
    // Port 0: no preamble yet, decide() will judge it by the config in force.
    if (this.port === 0 || this.finished) return false;
    const policies = this.deps.policies();
    // A config the control plane has not given yet refuses new connections; open ones stay as they were let in.
    if (policies.pending !== undefined) return false;
    const refusal = this.refusalBy(policies);
    if (refusal === undefined) return false;
    this.refusal = refusal;
    this.revoke(ANSWER_RESULT[refusal]);
    return true;
  }

  /** Why the service's tcp ports and AuthorizationPolicies refuse this connection, if they do (a denial is counted). */
  private refusalBy(policies: InboundPolicies): Answer | undefined {
    // Port 0 is no port; any other must be declared, or the peer could reach whatever listens on loopback.
    if (!this.deps.ports().has(this.port)) return Answer.noSuchPort;
    const denial = policies.authorizer?.checkConnection(this.peer, this.port);
    if (denial === undefined) return undefined;
    this.deps.metrics.denied.inc({ peer: peerService(this.peer), policy: denial.policy });
    return Answer.denied;
  }

  ready(socket: Socket<UpstreamLeg>): void {
    if (this.finished) return void socket.terminate();
    this.client.write(new Uint8Array([Answer.connected]));
    this.join(socket, this.deps.timeouts(), CALLER_FRAMED);
  }

  failed(): void {
    if (!this.finished) this.answer(Answer.upstreamFailed);
  }

  /** Refused: the answer goes to the caller's sidecar, then the end. */
  private answer(answer: Answer): void {
    this.refusal = answer;
    this.refuse(ANSWER_RESULT[answer]);
  }

  protected override closeRefused(): void {
    if (this.clientGone) return;
    if (this.refusal === undefined) return this.client.terminate();
    // Not read on: a refused peer's bytes would only be decrypted and dropped. Bun ignores pause() after end() on a
    // TLS socket and reads on at full speed (measured), so the answer goes with shutdown(), and reading pauses.
    this.client.write(new Uint8Array([this.refusal]));
    this.client.shutdown();
    this.client.pause();
    const client = this.client;
    setTimeout(() => client.terminate(), REFUSED_LINGER_MS).unref();
  }

  protected ended(result: CarriedResult, report: PipeReport | undefined): void {
    this.gone(this);
    const authority = this.port === 0 ? this.deps.service : `${this.deps.service}:${this.port}`;
    this.deps.report.ended(peerService(this.peer), this.peer, authority, result, this.startedAt, report);
  }
}
