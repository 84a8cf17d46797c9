/**
 * The connect step of an upstream connection, plain or mutual TLS, shared by the
 * HTTP/1.1 connection (h1/connection.ts) and the mux session (mux/connector.ts): one
 * timeout over TCP connect, TLS handshake and the peer check, and every way it can fail
 * as a ConnectError (or PeerIdentityError) naming the endpoint. The owner passes the
 * socket's events here while the dial is pending.
 */
import type { Socket, SocketHandler } from "bun";
import type { ConnectionBudget } from "../../core/connection-budget.ts";
import { ConnectError, connectErrorOf } from "./h1/errors.ts";
import { handshakeVerdict, type VerifyPeer } from "./h1/tls-verify.ts";

/**
 * The upstream connections all dials of the process may hold: descriptors are
 * process-wide, and once they run out accept() on every listener spins (see
 * core/connection-budget.ts). Set once by the sidecar; undefined: no limit.
 */
let upstreamBudget: ConnectionBudget | undefined;

export function limitUpstreamConnections(budget: ConnectionBudget | undefined): void {
  upstreamBudget = budget;
}

/** Told of each upstream whose certificate or identity a dial refused (`endpoint` is host:port). */
export type PeerRefusalObserver = (endpoint: string, refusal: Error) => void;

/**
 * Every upstream TLS connection of the process is dialed here, whichever protocol then
 * rides it: one place to count and warn of refused peers. Set once by the sidecar.
 */
let peerRefusals: PeerRefusalObserver | undefined;

export function observePeerRefusals(observer: PeerRefusalObserver | undefined): void {
  peerRefusals = observer;
}

export interface DialTls {
  /** Our certificate chain and key (PEM), presented to the server. */
  cert: string;
  key: string;
  /** Trust bundle (PEM) the server's chain must verify against. */
  ca: string;
  /** Checks the server's identity (its SPIFFE ID) once the chain verified; an error refuses it. */
  verifyPeer: VerifyPeer;
  /** SNI; none by default (endpoints are IPs). */
  serverName?: string;
  /** ALPN offer, in wire format. */
  alpn?: Buffer;
}

export interface DialTarget {
  host: string;
  port: number;
  tls?: DialTls;
  /** Covers TCP connect, TLS handshake and the peer check. */
  connectTimeoutMs: number;
  /** A FIN from the server ends only its direction (an opaque TCP stream, ../tcp); default: it closes the socket. */
  allowHalfOpen?: boolean;
}

export interface DialOutcome<T> {
  /** Connected, and on TLS the server was accepted. */
  ready(socket: Socket<T>): void;
  fail(err: Error): void;
}

export class Dial<T> {
  /** Set while pending. */
  private timer: Timer | undefined;
  private socket: Socket<T> | undefined;
  /** The budget this dial's socket holds a place in, until the socket closes or never opens. */
  private holding: ConnectionBudget | undefined;

  constructor(
    private readonly target: DialTarget,
    private readonly outcome: DialOutcome<T>,
  ) {}

  /** Until it is ready or failed, the socket's events belong here. */
  get pending(): boolean {
    return this.timer !== undefined;
  }

  start(data: T, handlers: SocketHandler<T>): void {
    const { host, port, tls, connectTimeoutMs, allowHalfOpen } = this.target;
    this.timer = setTimeout(() => this.fail(new ConnectError(`connect to ${host}:${port} timed out after ${connectTimeoutMs} ms`, "timeout")), connectTimeoutMs);
    const budget = upstreamBudget;
    if (budget !== undefined) {
      if (!budget.take()) return this.fail(new ConnectError(`no connection to ${host}:${port}: this proxy holds its limit of ${budget.limit} upstream connections`, "limit"));
      this.holding = budget;
    }
    try {
      Bun.connect<T>({
        hostname: host,
        port,
        data,
        socket: handlers,
        ...(allowHalfOpen ? { allowHalfOpen } : {}),
        // rejectUnauthorized: false only because Bun's hostname check cannot be turned off
        // and always fails for SPIFFE certificates; the chain verdict is enforced in
        // handshake() (tls-verify.ts), and nothing is written before it passed.
        ...(tls
          ? {
              tls: {
                cert: tls.cert,
                key: tls.key,
                ca: tls.ca,
                rejectUnauthorized: false,
                ...(tls.alpn ? { ALPNProtocols: tls.alpn } : {}),
                ...(tls.serverName ? { serverName: tls.serverName } : {}),
              },
            }
          : {}),
      }).catch((err: Error) => {
        this.socketClosed();
        this.fail(connectErrorOf(err, this.target));
      });
    } catch (err) {
      // Bun throws synchronously for an unusable TLS configuration (e.g. a bad PEM).
      this.socketClosed();
      this.fail(new ConnectError(`cannot connect to ${host}:${port}: ${(err as Error).message}`, "tls", { cause: err }));
    }
  }

  opened(socket: Socket<T>): void {
    // The dial already failed (timed out): the socket arrived late.
    if (!this.pending) return void socket.terminate();
    this.socket = socket;
    socket.setNoDelay(true);
    if (this.target.tls === undefined) this.succeed(socket);
  }

  /**
   * The server's certificate and identity, checked. While pending, it decides the dial; a
   * later handshake (TLS 1.2 renegotiation) must pass the same checks, and its refusal is
   * returned for the owner to act on.
   */
  handshake(socket: Socket<T>, authError: Error | null): Error | undefined {
    const refused = handshakeVerdict(socket, authError, this.target.tls!.verifyPeer);
    if (refused !== undefined) peerRefusals?.(`${this.target.host}:${this.target.port}`, refused);
    if (!this.pending) return refused;
    if (refused !== undefined) this.fail(refused);
    else this.succeed(socket);
    return undefined;
  }

  /** The socket closed before the dial was done; `err` is why, if known. */
  closed(err: Error | undefined): void {
    const { host, port, tls } = this.target;
    const why = err?.message ?? "closed by the server";
    this.fail(new ConnectError(`connection to ${host}:${port} failed ${tls ? "during the TLS handshake" : "while connecting"}: ${why}`, tls ? "tls" : "reset"));
  }

  errored(err: Error): void {
    this.fail(new ConnectError(`TLS handshake with ${this.target.host}:${this.target.port} failed: ${err.message}`, "tls", { cause: err }));
  }

  connectFailed(err: Error): void {
    this.socketClosed();
    this.fail(connectErrorOf(err, this.target));
  }

  /**
   * The socket is gone (its close event, or it never opened: Bun then reports connectError
   * and rejects, without a close): its place in the budget is free. Once, however many say so.
   */
  socketClosed(): void {
    this.holding?.release();
    this.holding = undefined;
  }

  private succeed(socket: Socket<T>): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.outcome.ready(socket);
  }

  private fail(err: Error): void {
    if (!this.pending) return;
    clearTimeout(this.timer);
    this.timer = undefined;
    // terminate(): in a TLS 1.3 handshake callback this refuses before our certificate is sent.
    this.socket?.terminate();
    this.outcome.fail(err);
  }
}
