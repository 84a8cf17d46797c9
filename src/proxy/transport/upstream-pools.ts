/**
 * The connections of one destination: an HTTP/1.1 pool per endpoint, each verifying
 * the peer's SPIFFE ID in its TLS handshake (or plain, for a service outside the mesh),
 * with the destination's connect and idle timeouts; and an HTTP/2 session per endpoint
 * for the service's HTTP/2 and gRPC calls, checked the same way. Pools of endpoints that stay across
 * a config change are kept, so a push does not cost a handshake.
 */
import type { WorkloadCerts } from "../certs.ts";
import type { Endpoint } from "../endpoint.ts";
import type { VerifyPeer } from "./h1/tls-verify.ts";
import { Http1Pool } from "./h1/index.ts";
import type { RequestBody } from "./h1/request-body.ts";
import type { PreparedRequest } from "./h1/request-head.ts";
import type { ResponseSink } from "./h1/response-sink.ts";
import type { AbortLike } from "./h1/abort.ts";
import { H2Sessions } from "../h2/client-sessions.ts";
import type { H2ClientSession } from "../h2/wire/client-session.ts";

export interface PoolSettings {
  certs: WorkloadCerts;
  /** Undefined for plain HTTP (a service outside the mesh). */
  verifyPeer?: VerifyPeer;
  connectTimeoutMs: number;
  idleTimeoutMs: number;
  /** Per endpoint: further requests wait (and count as pending) until a connection frees. */
  maxConnections: number;
  /** mTLS only: connections share sessions as mesh-mux/1 streams when the peer speaks it. */
  multiplex: boolean;
}

export class UpstreamPools {
  /** Connections opened by pools since closed, process-wide, so the connection counter never goes down. */
  static retiredConnections = 0;
  private pools = new Map<string, Http1Pool>();
  /** The same pools as an array: waiting() runs on every request, and a Map iterator is an allocation. */
  private list: Http1Pool[] = [];

  /** Opened with the first HTTP/2 call. */
  private h2: H2Sessions | undefined;

  constructor(private settings: PoolSettings) {}

  /** The HTTP/2 session to `endpoint`, open or opening. */
  h2Session(endpoint: Endpoint): H2ClientSession {
    if (this.h2 === undefined) {
      const { certs, verifyPeer, connectTimeoutMs, idleTimeoutMs } = this.settings;
      this.h2 = new H2Sessions({ tls: verifyPeer && { cert: certs.chainPem, key: certs.keyPem, ca: certs.bundlePem, verifyPeer }, connectTimeoutMs, idleTimeoutMs });
    }
    return this.h2.session(endpoint.key);
  }

  dispatch(endpoint: Endpoint, req: PreparedRequest, body: RequestBody | null, sink: ResponseSink, signal?: AbortLike): void {
    this.poolFor(endpoint).dispatch(req, body, sink, signal);
  }

  /** Keeps the pools of `endpoints`, closes the others (their requests in flight finish). */
  retain(endpoints: readonly Endpoint[]): void {
    const keep = new Set(endpoints.map((e) => e.key));
    this.h2?.retain(keep);
    for (const [key, pool] of this.pools) {
      if (keep.has(key)) continue;
      UpstreamPools.retiredConnections += pool.stats.created;
      pool.close();
      this.pools.delete(key);
    }
    this.list = [...this.pools.values()];
  }

  /**
   * Closes every pool; requests in flight finish. Requests waiting for a connection to
   * an endpoint `successor` serves too wait on in its pool (see Http1Pool.close).
   */
  close(successor?: { pools: UpstreamPools; endpoints: readonly Endpoint[] }): void {
    if (this.h2 !== undefined) UpstreamPools.retiredConnections += this.h2.created;
    this.h2?.close();
    const heirs = new Map(successor?.endpoints.map((e) => [e.key, e]));
    for (const [key, pool] of this.pools) {
      UpstreamPools.retiredConnections += pool.stats.created;
      const heir = heirs.get(key);
      pool.close(heir && pool.waiting > 0 ? successor!.pools.poolFor(heir) : undefined);
    }
    this.pools.clear();
    this.list = [];
  }

  /** Requests waiting for a connection, over every endpoint: checked on every request. */
  waiting(): number {
    let n = 0;
    for (const pool of this.list) n += pool.waiting;
    return n;
  }

  /** Totals over every endpoint, for metrics; HTTP/2 sessions count as connections. */
  totals(): { open: number; waiting: number; created: number; handshakes: number } {
    const t = { open: this.h2?.size ?? 0, waiting: 0, created: this.h2?.created ?? 0, handshakes: 0 };
    for (const pool of this.pools.values()) {
      const s = pool.stats;
      t.open += s.open;
      t.waiting += s.waiting;
      t.created += s.created;
      t.handshakes += s.handshakes;
    }
    return t;
  }

  private poolFor(endpoint: Endpoint): Http1Pool {
    let pool = this.pools.get(endpoint.key);
    if (!pool) {
      const { certs, verifyPeer, connectTimeoutMs, idleTimeoutMs, maxConnections, multiplex } = this.settings;
      pool = new Http1Pool({
        host: endpoint.spec.address,
        port: endpoint.spec.port,
        tls: verifyPeer ? { cert: certs.chainPem, key: certs.keyPem, ca: certs.bundlePem, verifyPeer } : undefined,
        connectTimeoutMs,
        idleTimeoutMs,
        maxConnections,
        multiplex,
      });
      this.pools.set(endpoint.key, pool);
      this.list.push(pool);
    }
    return pool;
  }
}
