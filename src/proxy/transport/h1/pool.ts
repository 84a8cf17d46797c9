/**
 * A pool of HTTP/1.1 connections to one endpoint (host:port). Idle keep-alive
 * connections are reused last-in first-out (the warmest socket, and the older ones age
 * out), are never reused once idle for idleTimeoutMs (checked on reuse, so the pool's
 * idle timeout, set below the server's, decides — not a timer's precision), and are
 * closed by a sweeper in the background.
 *
 * The keep-alive race: a server may close an idle connection just as we reuse it. A
 * request is retried once, on a fresh connection, only when all of these hold:
 *  - the connection had carried an earlier exchange (a fresh connection is never retried),
 *  - it closed before a single response byte arrived (ResetError, responseBytes 0),
 *  - and either no request byte was accepted by the socket (the write found it closed),
 *    or the request is replayable: no body, and an idempotent method (GET, HEAD, OPTIONS,
 *    PUT, DELETE, TRACE) or an Idempotency-Key.
 * A bodiless POST is not retried once written: a server that read it and then died
 * looks exactly like one that closed before reading it (Go's net/http draws the same
 * line). Every other failure goes to the caller, typed (errors.ts).
 */
import type { AbortLike } from "./abort.ts";
import { H1Connection, type ConnectionOptions, type ConnectionOwner, type ConnectionTls } from "./connection.ts";
import { abortError, ConnectError } from "./errors.ts";
import { MuxConnector } from "../mux/connector.ts";
import { prepareRequest, type PreparedRequest } from "./request-head.ts";
import type { RequestBody } from "./request-body.ts";
import { StreamedResponse, type ResponseSink } from "./response-sink.ts";
import { SlotList } from "../../../core/slot-list.ts";
import { eventNow } from "../../../core/clock.ts";
import { hostPort } from "../../../core/ip-address.ts";

export interface PoolOptions {
  host: string;
  port: number;
  tls?: ConnectionTls;
  /** TCP connect + TLS handshake + peer check. */
  connectTimeoutMs: number;
  /** An idle connection older than this is closed, never reused. Keep it below the upstream's. */
  idleTimeoutMs: number;
  /** Open connections (connecting, busy, idle) at most; further requests wait. Default: no limit. */
  maxConnections?: number;
  /** With tls: connections are streams of shared sessions when the server speaks mesh-mux/1 (../mux). */
  multiplex?: boolean;
}

export interface PoolRequest {
  method: string;
  /** origin-form: "/path?query" */
  pathAndQuery: string;
  /** Sent as given, except connection-level headers (request-head.ts); Host defaults to host:port. */
  headers: Headers;
  body: RequestBody | null;
  /** Aborting before the response head rejects (TimeoutError when its reason is one); after, errors the body. */
  signal?: AbortLike;
}

export interface PoolStats {
  /** connecting + busy + idle */
  open: number;
  idle: number;
  busy: number;
  connecting: number;
  /** Requests waiting for a connection (maxConnections reached). */
  waiting: number;
  /** Connections attempted. */
  created: number;
  /** TLS handshakes completed with an accepted peer. */
  handshakes: number;
  /** Exchanges sent on a reused connection. */
  reused: number;
  /** Requests retried after the keep-alive race. */
  staleRetries: number;
}

interface Waiter {
  resolve(conn: H1Connection): void;
  reject(err: Error): void;
  signal: AbortLike | undefined;
  onAbort: (() => void) | undefined;
}

export class Http1Pool implements ConnectionOwner {
  private readonly idleConns: H1Connection[] = [];
  /** A SlotList, not a Set: a connection joins and leaves it once per request. */
  private readonly busyConns = new SlotList<H1Connection>();
  private readonly waiters: Waiter[] = [];
  private connecting = 0;
  private created = 0;
  private handshakes = 0;
  private reused = 0;
  private staleRetries = 0;
  private isClosed = false;
  private sweeper: Timer | undefined;
  private readonly max: number;
  private readonly connOpts: ConnectionOptions;
  private readonly mux: MuxConnector | undefined;
  private readonly defaultHost: string;

  constructor(private readonly options: PoolOptions) {
    // Without a CA, Bun would trust its built-in public roots: never for mesh traffic.
    if (options.tls && !options.tls.ca.includes("-----BEGIN CERTIFICATE-----")) throw new TypeError("tls.ca must hold the trust bundle (PEM certificates)");
    if (!(options.connectTimeoutMs > 0) || !(options.idleTimeoutMs > 0)) throw new TypeError("connectTimeoutMs and idleTimeoutMs must be positive");
    this.max = options.maxConnections ?? Infinity;
    const { host, port, tls, connectTimeoutMs, idleTimeoutMs } = options;
    this.mux = tls && options.multiplex ? new MuxConnector({ host, port, tls, connectTimeoutMs, idleTimeoutMs, onHandshake: () => this.handshake() }) : undefined;
    this.connOpts = { host, port, tls, connectTimeoutMs, ...(this.mux ? { mux: this.mux } : {}) };
    this.defaultHost = hostPort(options.host, options.port);
  }

  /** Resolves when the response head arrived; the body streams. Rejects with the errors of errors.ts. */
  send(req: PoolRequest): Promise<Response> {
    if (this.isClosed) return Promise.reject(new ConnectError("the connection pool is closed", "closed"));
    if (req.signal?.aborted) return Promise.reject(abortError(req.signal.reason, false));
    let prepared: PreparedRequest;
    try {
      prepared = prepareRequest(req.method, req.pathAndQuery, req.headers, req.body !== null, this.defaultHost);
    } catch (err) {
      return Promise.reject(err);
    }
    const sink = new StreamedResponse();
    this.dispatch(prepared, req.body, sink, req.signal);
    return sink.promise;
  }

  /**
   * Sends a prepared request on a pooled connection; the response or the failure (the
   * errors of errors.ts) goes to `sink`. The keep-alive race is retried here, once.
   */
  dispatch(prepared: PreparedRequest, body: RequestBody | null, sink: ResponseSink, signal?: AbortLike): void {
    if (this.isClosed) return sink.fail(new ConnectError("the connection pool is closed", "closed"));
    const conn = this.takeIdle();
    if (conn !== undefined) return conn.exchange(prepared, body, sink, signal);
    this.dispatchLater(prepared, body, sink, signal);
  }

  /**
   * Apart from dispatch(): a function whose variables a closure captures allocates a
   * scope object on every call, even when it returns before making the closure.
   */
  private dispatchLater(prepared: PreparedRequest, body: RequestBody | null, sink: ResponseSink, signal: AbortLike | undefined): void {
    this.acquire(signal).then(
      (acquired) => acquired.exchange(prepared, body, sink, signal),
      (err: Error) => sink.fail(err),
    );
  }

  // ---- ConnectionOwner ----

  /** A reused connection lost the keep-alive race (the connection tells): once more, on a fresh connection. */
  retryStale(prepared: PreparedRequest, body: RequestBody | null, sink: ResponseSink, signal: AbortLike | undefined): void {
    this.staleRetries++;
    this.acquire(signal, true).then(
      (fresh) => fresh.exchange(prepared, body, sink, signal),
      (err: Error) => sink.fail(err),
    );
  }

  /**
   * Closes idle connections now and busy ones when their exchange is over. Requests
   * waiting for a connection wait on in `successor`, the pool that replaces this one
   * (renewed certificates, a changed policy), in their order; without one they fail.
   */
  close(successor?: Http1Pool): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.stopSweeper();
    for (const conn of this.idleConns.splice(0)) conn.close();
    for (const conn of this.busyConns.toArray()) conn.closeWhenDone = true;
    for (const w of this.waiters.splice(0)) {
      detachWaiter(w);
      if (successor !== undefined && !successor.isClosed) successor.acquire(w.signal).then(w.resolve, w.reject);
      else w.reject(new ConnectError("the connection pool is closed", "closed"));
    }
    this.mux?.close();
  }

  /** Requests waiting for a connection; cheaper than `stats` on the request path. */
  get waiting(): number {
    return this.waiters.length;
  }

  get stats(): PoolStats {
    const idle = this.idleConns.length;
    const busy = this.busyConns.size;
    return {
      open: this.connecting + idle + busy,
      idle,
      busy,
      connecting: this.connecting,
      waiting: this.waiters.length,
      created: this.created,
      handshakes: this.handshakes,
      reused: this.reused,
      staleRetries: this.staleRetries,
    };
  }

  reusable(conn: H1Connection): void {
    this.busyConns.delete(conn);
    if (this.isClosed) {
      conn.close();
      return;
    }
    const w = this.waiters.shift();
    if (w !== undefined) {
      detachWaiter(w);
      this.busyConns.add(conn);
      this.reused++;
      w.resolve(conn);
      return;
    }
    conn.idleSince = eventNow();
    this.idleConns.push(conn);
    if (this.sweeper === undefined) this.startSweeper();
  }

  closed(conn: H1Connection): void {
    if (!this.busyConns.delete(conn)) {
      const i = this.idleConns.indexOf(conn);
      if (i >= 0) this.idleConns.splice(i, 1);
    }
    // A slot opened up for a request waiting at maxConnections.
    const w = !this.isClosed && this.open < this.max ? this.waiters.shift() : undefined;
    if (w !== undefined) {
      detachWaiter(w);
      this.connect().then(w.resolve, w.reject);
    }
  }

  handshake(): void {
    this.handshakes++;
  }

  // ---- acquiring ----

  private get open(): number {
    return this.connecting + this.idleConns.length + this.busyConns.size;
  }

  /** The most recently used idle connection still fit for reuse, if any. */
  private takeIdle(): H1Connection | undefined {
    const now = eventNow();
    for (let conn = this.idleConns.pop(); conn !== undefined; conn = this.idleConns.pop()) {
      if (conn.alive && now - conn.idleSince < this.options.idleTimeoutMs) {
        this.busyConns.add(conn);
        this.reused++;
        return conn;
      }
      conn.close();
    }
    return undefined;
  }

  private acquire(signal: AbortLike | undefined, fresh = false): Promise<H1Connection> {
    if (signal?.aborted) return Promise.reject(abortError(signal.reason, false));
    if (!fresh) {
      const conn = this.takeIdle();
      if (conn) return Promise.resolve(conn);
    }
    if (this.open < this.max || fresh) return this.withSignal(this.connect(), signal);
    return new Promise<H1Connection>((resolve, reject) => {
      const w: Waiter = { resolve, reject, signal, onAbort: undefined };
      if (signal) {
        w.onAbort = () => {
          const i = this.waiters.indexOf(w);
          if (i >= 0) this.waiters.splice(i, 1);
          reject(abortError(signal.reason, false));
        };
        signal.addEventListener("abort", w.onAbort, { once: true });
      }
      this.waiters.push(w);
    });
  }

  private async connect(): Promise<H1Connection> {
    this.connecting++;
    this.created++;
    let conn: H1Connection;
    try {
      conn = await H1Connection.connect(this.connOpts, this);
    } finally {
      this.connecting--;
    }
    if (this.isClosed) conn.closeWhenDone = true;
    this.busyConns.add(conn);
    return conn;
  }

  /** Stops waiting for a connect when the signal fires; a connection that arrives later is kept. */
  private withSignal(connecting: Promise<H1Connection>, signal: AbortLike | undefined): Promise<H1Connection> {
    if (signal === undefined) return connecting;
    return new Promise<H1Connection>((resolve, reject) => {
      let gaveUp = false;
      const onAbort = () => {
        gaveUp = true;
        reject(abortError(signal.reason, false));
      };
      signal.addEventListener("abort", onAbort, { once: true });
      connecting.then(
        (conn) => {
          signal.removeEventListener("abort", onAbort);
          if (!gaveUp) return resolve(conn);
          // Nobody waits for it any more: it becomes idle like any finished connection.
          if (conn.idle) this.reusable(conn);
        },
        (err: Error) => {
          signal.removeEventListener("abort", onAbort);
          reject(err);
        },
      );
    });
  }

  // ---- idle housekeeping ----

  private sweep(): void {
    const now = eventNow();
    // Oldest first: idle connections are pushed in the order they went idle.
    while (this.idleConns.length > 0 && now - this.idleConns[0]!.idleSince >= this.options.idleTimeoutMs) {
      this.idleConns.shift()!.close();
    }
    if (this.idleConns.length === 0) this.stopSweeper();
  }

  /** Apart from reusable(), which runs per request: its closure would cost each call a scope object. */
  private startSweeper(): void {
    this.sweeper = setInterval(() => this.sweep(), Math.max(10, this.options.idleTimeoutMs / 4));
    this.sweeper.unref();
  }

  private stopSweeper(): void {
    if (this.sweeper !== undefined) clearInterval(this.sweeper);
    this.sweeper = undefined;
  }
}

function detachWaiter(w: Waiter): void {
  if (w.onAbort !== undefined) w.signal!.removeEventListener("abort", w.onAbort);
}
