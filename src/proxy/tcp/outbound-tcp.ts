/**
 * The caller's side of opaque TCP: a local listener per TCP upstream the sidecar is told
 * of (Consul's upstreams with local_bind_port): the application connects to it as if to
 * the service's port; or a connection mesh redirect sent to the outbound listener that was
 * bound for a Service's address at a tcp port (adopt()). Each is carried to an endpoint the destination's
 * balancer picks, over mutual TLS with the peer's SPIFFE ID checked and ALPN mesh-tcp/1
 * (wire.ts), or in plain TCP to a service outside the mesh. A connection that fails to
 * connect goes to another endpoint, within the DestinationPolicy's retry attempts: nothing
 * of the client's has reached a service yet. After that, nothing is retried.
 */
import type { Socket, TCPSocketListener } from "bun";
import type { ConnectionBudget } from "../../core/connection-budget.ts";
import type { Logger } from "../../core/log.ts";
import type { WorkloadCerts } from "../certs.ts";
import type { Destination, Snapshot } from "../destinations.ts";
import type { Endpoint, PickContext } from "../endpoint.ts";
import { PeerIdentityError } from "../errors.ts";
import { UNKNOWN_DESTINATION, type ProxyMetrics } from "../metrics.ts";
import { pickEndpoint } from "../outbound-call.ts";
import { alpnWire } from "../transport/mux/frame.ts";
import { CarriedConnection, type CarriedResult } from "./carried.ts";
import { UpstreamLeg } from "./leg.ts";
import type { PipeReport } from "./pipe.ts";
import type { TcpReporter } from "./report.ts";
import { Answer, ANSWER_RESULT, preamble, TCP_ALPN } from "./wire.ts";
import type { OriginalDestination } from "../original-destination.ts";
import type { TcpSocketOwner } from "../transport/h1-server/listener.ts";
import { PassthroughConnection, sniffRedirected } from "./passthrough.ts";

/** Where a carried connection goes: `service`'s tcp `port`. */
export interface TcpTarget {
  /** `name` or `name.namespace`. */
  service: string;
  /** The Service's port (a tcp one). */
  port: number;
}

/** A TCP upstream: the application reaches its target at `bind`. */
export interface TcpUpstream extends TcpTarget {
  bind: { address: string; port: number };
}

export interface OutboundTcpDeps {
  snapshot: () => Snapshot;
  certs: () => WorkloadCerts;
  metrics: ProxyMetrics;
  report: TcpReporter;
  /** The listeners' connection budget, shared with the HTTP listeners. */
  budget?: ConnectionBudget;
  /** A connection was closed at accept: the budget was spent. */
  onOverLimit?: () => void;
  log: Logger;
}

const OFFER = alpnWire([TCP_ALPN]);
/** The peer sidecar speaks frames (frames.ts); a service outside the mesh, its own bytes. */
const PEER_FRAMED = [false, true] as const;
const PLAIN = [false, false] as const;
/** A connection has no headers to hash on: ring-hash picks as for a request without its header. */
const NO_HEADERS: PickContext = { header: () => null };

export class OutboundTcp {
  private readonly listeners: TCPSocketListener<OutboundTcpConnection | undefined>[] = [];
  private readonly open = new Set<CarriedConnection>();
  /** Connections closed at accept because the budget was spent. */
  refusedOverLimit = 0;

  constructor(private readonly deps: OutboundTcpDeps) {}

  get count(): number {
    return this.open.size;
  }

  /** Binds `upstream`'s listener; its port (the one asked, or the one given for 0). */
  listen(upstream: TcpUpstream): number {
    const self = this;
    const listener = Bun.listen<OutboundTcpConnection | undefined>({
      hostname: upstream.bind.address,
      port: upstream.bind.port,
      allowHalfOpen: true,
      socket: {
        open(sock) {
          if (self.deps.budget !== undefined && !self.deps.budget.take()) {
            self.refusedOverLimit++;
            self.deps.onOverLimit?.();
            return void sock.terminate();
          }
          self.adopt(sock as Socket<unknown>, upstream);
        },
        data: (sock, chunk) => sock.data?.onData(chunk),
        drain: (sock) => sock.data?.onDrain(),
        end: (sock) => sock.data?.onEnd(),
        timeout: (sock) => sock.data?.onTimeout(),
        close: (sock, err) => {
          if (sock.data === undefined) return;
          self.deps.budget?.release();
          sock.data.onClose(err);
        },
        error: (sock, err) => sock.data?.onClose(err),
      },
    });
    this.listeners.push(listener);
    return listener.port;
  }

  /** Carries the client's connection `sock` (its place in the budget taken) to `target`: made the socket's data, which its events go to. */
  adopt(sock: Socket<unknown>, target: TcpTarget): OutboundTcpConnection {
    sock.setNoDelay(true);
    const conn = new OutboundTcpConnection(sock, target, this.deps, (c) => this.open.delete(c));
    // Before start(), which may refuse the connection at once: its events must find their owner.
    sock.data = conn;
    this.open.add(conn);
    conn.start();
    return conn;
  }

  /**
   * A connection mesh redirect sent that was bound for an address the mesh does not know:
   * read as HTTP after all (`http`) if its first request names a mesh Service, else
   * carried to where it was going (passthrough.ts).
   */
  passthrough(sock: Socket<unknown>, original: OriginalDestination, http: (initial: Buffer) => void): TcpSocketOwner {
    return sniffRedirected(sock, original, http, {
      snapshot: this.deps.snapshot,
      carry: (s, o) => {
        const conn = new PassthroughConnection(s, o, this.deps.report, (c) => this.open.delete(c));
        this.open.add(conn);
        return conn;
      },
    });
  }

  /** No new connections; open ones go on. */
  stopAccepting(): void {
    for (const l of this.listeners) l.stop(false);
  }

  /** A drain's end: every connection is ended gracefully. */
  closeAll(): void {
    this.stopAccepting();
    for (const conn of [...this.open]) conn.shutdown();
  }
}

class OutboundTcpConnection extends CarriedConnection {
  private dest: Destination | undefined;
  private targetPort = 0;
  private endpoint: Endpoint | undefined;
  /** Endpoints whose dial failed, left out of the next pick while there is another. */
  private tried: Endpoint[] | undefined;
  private dialing = false;
  private tries = 0;
  private awaitingAnswer = false;
  private holdsSlot = false;

  constructor(
    client: Socket<unknown>,
    private readonly upstream: TcpTarget,
    private readonly deps: OutboundTcpDeps,
    private readonly gone: (c: OutboundTcpConnection) => void,
  ) {
    super(client);
    deps.report.opened();
  }

  start(): void {
    const dest = this.deps.snapshot().destinations.get(this.upstream.service);
    if (dest === undefined) return this.refuse("unknown-service");
    this.dest = dest;
    const targetPort = dest.tcpPorts.get(this.upstream.port);
    if (targetPort === undefined) return this.refuse("no-such-port");
    const admitted = dest.breaker.tryAcquire("connections");
    if (admitted !== true) return this.refuse(admitted);
    this.targetPort = targetPort;
    this.holdsSlot = true;
    this.dialNext(undefined);
  }

  /** `failed`: the endpoint that just failed; every one that did is left out while there is another. */
  private dialNext(failed: Endpoint | undefined): void {
    const dest = this.dest!;
    if (failed !== undefined) (this.tried ??= []).push(failed);
    const endpoint = pickEndpoint(dest, NO_HEADERS, this.tried);
    if (endpoint === undefined) return this.refuse("no-healthy-endpoints");
    this.endpoint = endpoint;
    endpoint.inflight++;
    this.dialing = true;
    this.tries++;
    const connectTimeoutMs = dest.policy.timeouts.connect;
    const { address } = endpoint.spec;
    if (dest.spiffeId === undefined) return void new UpstreamLeg({ host: address, port: this.targetPort, connectTimeoutMs }, this);
    const certs = this.deps.certs();
    const tls = { cert: certs.chainPem, key: certs.keyPem, ca: certs.bundlePem, verifyPeer: dest.verifyPeer!, alpn: OFFER };
    new UpstreamLeg({ host: address, port: endpoint.spec.port, connectTimeoutMs, tls }, this);
  }

  ready(socket: Socket<UpstreamLeg>): void {
    const dest = this.dest!;
    this.dialing = false;
    if (this.finished) {
      this.endpoint!.inflight--;
      return void socket.terminate();
    }
    if (dest.spiffeId !== undefined) {
      // A peer that did not choose mesh-tcp/1 would read the client's bytes as HTTP.
      if (socket.alpnProtocol !== TCP_ALPN) {
        socket.terminate();
        return this.refuse("peer-without-tcp");
      }
      socket.write(preamble(this.targetPort));
      this.awaitingAnswer = true;
    } else dest.outlier.onResult(this.endpoint!, true);
    this.join(socket, dest.policy.timeouts, dest.spiffeId !== undefined ? PEER_FRAMED : PLAIN);
  }

  failed(err: Error): void {
    const dest = this.dest!;
    const endpoint = this.endpoint!;
    this.dialing = false;
    this.endpoint = undefined;
    endpoint.inflight--;
    if (this.finished) return;
    dest.outlier.onResult(endpoint, false);
    const identity = err instanceof PeerIdentityError;
    const said = { service: this.upstream.service, port: this.upstream.port, endpoint: endpoint.key, reason: err.message };
    // A refused certificate was counted and warned of by the dial (proxy.ts observePeerRefusals).
    this.deps.log.debug(said, identity ? "tcp: the peer's certificate was refused" : "tcp connect failed");
    if (dest.call.retryPolicy.retryOn.connectFailure && this.tries <= dest.call.retryPolicy.attempts) {
      this.deps.metrics.retries.inc({ peer: dest.name });
      return this.dialNext(endpoint);
    }
    this.refuse(identity ? "peer-identity" : "connect-failure");
  }

  override upstreamData(chunk: Uint8Array): void {
    if (this.awaitingAnswer) {
      this.awaitingAnswer = false;
      const answer = chunk[0] as Answer;
      // As for HTTP: the service failing counts against its endpoint; a refusal by policy does not.
      if (answer === Answer.connected || answer === Answer.upstreamFailed) this.dest!.outlier.onResult(this.endpoint!, answer === Answer.connected);
      if (answer !== Answer.connected) return this.refuse(ANSWER_RESULT[answer] ?? "bad-answer");
      if (chunk.byteLength === 1) return;
      chunk = chunk.subarray(1);
    }
    super.upstreamData(chunk);
  }

  /** The callee ended or closed before its answer: a reset to the application, and a failure of the endpoint. */
  override upstreamEnd(): void {
    if (this.awaitingAnswer) return this.noAnswer();
    super.upstreamEnd();
  }

  override upstreamClose(err: Error | undefined): void {
    if (this.awaitingAnswer) this.noAnswer();
    super.upstreamClose(err);
  }

  private noAnswer(): void {
    this.awaitingAnswer = false;
    this.dest!.outlier.onResult(this.endpoint!, false);
    this.refuse("no-answer");
  }

  protected ended(result: CarriedResult, report: PipeReport | undefined): void {
    this.gone(this);
    if (this.endpoint !== undefined && !this.dialing) this.endpoint.inflight--;
    if (this.holdsSlot) this.dest!.breaker.release("connections");
    const peer = this.dest?.name ?? UNKNOWN_DESTINATION;
    this.deps.report.ended(peer, this.dest?.name ?? "", `${this.upstream.service}:${this.upstream.port}`, result, this.startedAt, report);
  }
}
