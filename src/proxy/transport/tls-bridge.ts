/**
 * The identity bridge. Bun.serve cannot show a handler the client certificate, so mTLS
 * is terminated here with Bun.listen, where the handshake exposes the peer's leaf. Each
 * verified connection is then piped, decrypted, into a loopback-only HTTP server; the
 * bridge remembers which loopback source address and port carry which SPIFFE ID, and the
 * HTTP handler looks its caller up by `identityOf(server.requestIP(req))`.
 *
 * Why this is safe: an address and port map to an identity only while the bridge's own
 * loopback connection holds them (the OS never gives two live connections to one
 * listener the same source address and port), the entry is removed when that connection
 * closes, and a request arriving on any other connection has no identity and is refused.
 * The address counts as much as the port: any local process may connect from another
 * loopback address (127.0.0.2) with the port of a bridge connection. A
 * connection is cut when its peer's certificate ends (./credential-expiry.ts): a held
 * poll cannot go on under an expired identity.
 *
 * Without client certificates (the bootstrap port, where a sidecar has none yet) it is
 * only a TLS front with a connection limit and a handshake timeout, which Bun.serve
 * lacks; it records only each client's address (`peerOf`), for the audit log. Without TLS (the control plane's admin port) it is
 * a plain front with a connection limit; the loopback server's idle timeout ends a
 * connection that sends nothing.
 */
import type { Socket, TCPSocketListener } from "bun";
import { peerIdFromDer } from "../peer-identity.ts";
import type { ConnectionBudget } from "../../core/connection-budget.ts";
import { writeQueued } from "./write-queue.ts";
import { CredentialExpiry, trustWithdrawn } from "./credential-expiry.ts";
import { hostPort } from "../../core/ip-address.ts";
import { bindClaimed, type PortClaim } from "./unshared-port.ts";

export interface BridgeTls {
  cert: string;
  key: string;
  ca: string;
  trustDomain: string;
  /** When `cert` ends (epoch ms): no identified connection it served outlives it. */
  notAfterMs?: number;
}

export interface BridgeEvents {
  onRefused(reason: string): void;
  onOpen(): void;
  onClose(): void;
  /** A connection was closed at accept: the budget was spent. */
  onOverLimit?(): void;
}

export interface BridgeOptions {
  /** Outer connections it may hold; each costs three descriptors (outer, loopback client, loopback server). */
  budget?: ConnectionBudget;
  /** false: any TLS client is piped through, and no identity is recorded (default true). */
  clientCertificates?: boolean;
  /**
   * Connections one identity may hold at once; past it, its next is closed after the
   * handshake. So one identity (a compromised workload, its replicas included) cannot
   * take the whole budget and shut every other caller out. Default: no such limit.
   */
  maxPerIdentity?: number;
}

/** How long a connection may take to complete its TLS handshake (Bun fires on 4-second ticks). */
const HANDSHAKE_TIMEOUT_S = 10;

/** Who is at the far end of a bridge connection. */
export interface BridgePeer {
  /** The client's address and port as the listener saw it: "address:port" ("[v6]:port"). */
  address: string;
  /** The SPIFFE ID its certificate proved, when the bridge asks for one. */
  spiffeId?: string;
  /** That certificate's signer (authority key identifier, hex) and end: which CA a sidecar's identity stands on now. */
  certificate?: ProvenCertificate;
}

export interface ProvenCertificate {
  issuerKeyId?: string;
  notAfterMs: number;
}

interface Link {
  inner?: Socket<Link>;
  /** The inner connection's source, "address port", while the loopback side is open. */
  source?: string;
  /** The SPIFFE ID of its peer, counted in `held` while it is open. */
  spiffeId?: string;
  /** Its peer's certificate: the key that signed it (authority key identifier, hex), and its end. */
  certificate?: ProvenCertificate;
  outer: Socket<Outer>;
  pendingToInner: Uint8Array[];
  pendingToOuter: Uint8Array[];
  closed: boolean;
}
/** A connection's state; undefined for one closed at accept. */
type Outer = { link?: Link } | undefined;

export class TlsBridge {
  /** Loopback source ("address port") of a bridge connection → its client. */
  private readonly peers = new Map<string, BridgePeer>();
  /** Entries of `peers` with a SPIFFE ID. */
  private identifiedCount = 0;
  /** Open connections per SPIFFE ID. */
  private readonly held = new Map<string, number>();
  private listener?: TCPSocketListener<Outer>;
  /** Its address, held against other mesh processes while it listens (./unshared-port.ts). */
  private claim?: PortClaim;
  private bound?: { hostname: string; port: number; innerPort: number };
  private links = new Set<Link>();
  /** Connections closed at accept because the budget was spent. */
  refusedOverLimit = 0;

  private readonly budget: ConnectionBudget | undefined;
  private readonly clientCertificates: boolean;
  private readonly maxPerIdentity: number;
  /** Identified connections, each until its peer's certificate ends. HTTP through a byte pipe cannot be asked to move: it is cut. */
  private readonly expiry = new CredentialExpiry<Link>(
    () => undefined,
    (link) => this.cut(link),
  );

  constructor(
    /** Undefined: plain TCP, no TLS. */
    private tls: BridgeTls | undefined,
    private events: BridgeEvents,
    options: BridgeOptions = {},
  ) {
    this.budget = options.budget;
    this.clientCertificates = options.clientCertificates ?? true;
    this.maxPerIdentity = options.maxPerIdentity ?? Infinity;
  }

  /** The SPIFFE ID of the caller whose request reached the loopback server from `source` (`server.requestIP(req)`), if it came through this bridge. */
  identityOf(source: { address: string; port: number } | null): string | undefined {
    return this.peerOf(source)?.spiffeId;
  }

  /** The client whose request reached the loopback server from `source`, if it came through this bridge. */
  peerOf(source: { address: string; port: number } | null): BridgePeer | undefined {
    return source === null ? undefined : this.peers.get(`${source.address} ${source.port}`);
  }

  /** Connections that carry an identity now. */
  get identified(): number {
    return this.identifiedCount;
  }

  listen(hostname: string, port: number, innerPort: number): number {
    // Only a TLS bridge rotates, beside itself (SO_REUSEPORT): it must not start beside another process's (./unshared-port.ts).
    if (this.tls) ({ bound: this.listener, claim: this.claim } = bindClaimed(hostname, port, (free) => this.bind(hostname, free, innerPort)));
    else this.listener = this.bind(hostname, port, innerPort);
    this.bound = { hostname, port: this.listener.port, innerPort };
    return this.listener.port;
  }

  /**
   * New certificate and bundle for new connections. Bun keeps a listener's TLS context
   * for life, so a second listener takes the same port (SO_REUSEPORT) before the first
   * stops accepting; open connections finish on the old certificate, identified ones by its
   * end at the latest. The kernel resets connections still queued on the first listener
   * when it closes (unless net.ipv4.tcp_migrate_req=1): clients retry their connect.
   */
  rotate(tls: BridgeTls): void {
    if (!this.bound || !this.listener || !this.tls) throw new Error("rotate() before listen(), or on a plain bridge");
    const withdrawn = trustWithdrawn(this.tls.ca, tls.ca);
    this.tls = tls;
    const old = this.listener;
    this.listener = this.bind(this.bound.hostname, this.bound.port, this.bound.innerPort);
    old.stop(false);
    // A root left the bundle: what it proved is cut at once, not at a grace's end, or an identity it vouched for
    // (one a compromised old root minted) could still be signed a certificate under the new root. Clients reconnect.
    if (withdrawn) for (const link of [...this.links]) if (link.spiffeId !== undefined) this.cut(link);
  }

  private bind(hostname: string, port: number, innerPort: number): TCPSocketListener<Outer> {
    const bridge = this;
    // What this listener serves, for life: after a rotation another listener serves the next.
    const served = this.tls;
    // reusePort is honoured by Bun.listen at run time, though its types omit it.
    return Bun.listen<Outer>(<Bun.TCPSocketListenOptions<Outer>>{
      hostname,
      port,
      reusePort: served !== undefined,
      tls:
        served === undefined
          ? undefined
          : this.clientCertificates
            ? { cert: served.cert, key: served.key, ca: served.ca, requestCert: true, rejectUnauthorized: true }
            : { cert: served.cert, key: served.key },
      socket: {
        open(outer) {
          if (bridge.budget !== undefined && !bridge.budget.take()) {
            bridge.refusedOverLimit++;
            bridge.events.onOverLimit?.();
            outer.terminate();
            return;
          }
          // Per-connection state: Bun.listen's `data` option would be one object shared by every socket.
          outer.data = {};
          if (served === undefined) return void bridge.open(outer, undefined, innerPort); // plain: no handshake to wait for
          // Until its handshake is done: after it, the loopback server's idle timeout ends an unused connection.
          outer.timeout(HANDSHAKE_TIMEOUT_S);
        },
        timeout(outer) {
          if (outer.data !== undefined && outer.data.link === undefined) outer.terminate();
        },
        handshake(outer, success, authError) {
          if (outer.data === undefined) return;
          // A client certificate that did not verify comes as success with an error (listener.ts says more).
          if (!success || (bridge.clientCertificates && authError)) {
            bridge.events.onRefused(authError?.message ?? "handshake failed");
            outer.end();
            return;
          }
          if (!bridge.clientCertificates) return void bridge.open(outer, undefined, innerPort);
          const der = outer.getPeerX509Certificate()?.raw;
          const id = der ? peerIdFromDer(new Uint8Array(der), served!.trustDomain) : { ok: false as const, reason: "no client certificate" };
          if (!id.ok) {
            bridge.events.onRefused(id.reason);
            outer.end();
            return;
          }
          if ((bridge.held.get(id.spiffeId) ?? 0) >= bridge.maxPerIdentity) {
            bridge.events.onRefused(`${id.spiffeId} holds ${bridge.maxPerIdentity} connections, the most one identity may`);
            outer.end();
            return;
          }
          const link = bridge.open(outer, id.spiffeId, innerPort, { issuerKeyId: id.issuerKeyId, notAfterMs: id.notAfterMs });
          bridge.expiry.watch(link, Math.min(id.notAfterMs, served!.notAfterMs ?? Infinity));
        },
        data(outer, chunk) {
          const link = outer.data?.link;
          if (!link || link.closed) return; // refused, or the loopback side is gone: nothing will read it
          if (!link.inner) {
            // Until the loopback connection opens, hold one read and stop reading: a
            // client could otherwise have any amount buffered here (a 1 MB URL would be).
            link.pendingToInner.push(new Uint8Array(chunk));
            outer.pause();
          } else if (!writeQueued(link.inner, link.pendingToInner, chunk)) outer.pause();
        },
        drain(outer) {
          const link = outer.data?.link;
          if (!link || !writeQueued(outer, link.pendingToOuter)) return;
          if (link.closed) outer.end(); // the response finished while bytes were still queued
          else link.inner?.resume();
        },
        close(outer) {
          if (outer.data === undefined) return; // closed at accept: it took nothing
          bridge.budget?.release();
          const link = outer.data.link;
          if (link) bridge.close(link);
        },
        error(outer) {
          const link = outer.data?.link;
          if (link) bridge.close(link);
        },
      },
    });
  }

  private open(outer: Socket<Outer>, spiffeId: string | undefined, innerPort: number, certificate?: ProvenCertificate): Link {
    const link: Link = { outer, pendingToInner: [], pendingToOuter: [], closed: false, spiffeId, certificate };
    outer.data = { link };
    this.links.add(link);
    if (spiffeId !== undefined) this.held.set(spiffeId, (this.held.get(spiffeId) ?? 0) + 1);
    this.events.onOpen();
    const bridge = this;
    void Bun.connect<Link>({
      hostname: "127.0.0.1",
      port: innerPort,
      data: link,
      socket: {
        open(inner) {
          if (link.closed) {
            inner.end();
            return;
          }
          link.inner = inner;
          link.source = `${inner.localAddress} ${inner.localPort}`;
          bridge.peers.set(link.source, { address: hostPort(outer.remoteAddress, outer.remotePort), spiffeId, certificate: link.certificate });
          if (spiffeId !== undefined) bridge.identifiedCount++;
          if (writeQueued(inner, link.pendingToInner)) outer.resume();
          else outer.pause();
        },
        data(inner, chunk) {
          if (!writeQueued(outer, link.pendingToOuter, chunk)) inner.pause();
        },
        drain(inner) {
          if (writeQueued(inner, link.pendingToInner)) outer.resume();
        },
        close() {
          bridge.close(link);
        },
        error() {
          bridge.close(link);
        },
      },
    }).catch(() => bridge.close(link));
    return link;
  }

  private cut(link: Link): void {
    this.close(link);
    link.outer.terminate();
  }

  private close(link: Link): void {
    if (link.closed) return;
    link.closed = true;
    link.pendingToInner.length = 0; // nobody will read it now
    link.outer.pause(); // nor anything the client still sends
    this.links.delete(link);
    this.expiry.forget(link);
    if (link.source !== undefined) {
      this.peers.delete(link.source);
      if (link.spiffeId !== undefined) this.identifiedCount--;
    }
    if (link.spiffeId !== undefined) {
      const n = this.held.get(link.spiffeId)! - 1;
      if (n > 0) this.held.set(link.spiffeId, n);
      else this.held.delete(link.spiffeId);
    }
    link.inner?.end();
    // Queued response bytes must reach the client before its connection ends.
    if (link.pendingToOuter.length === 0) link.outer.end();
    this.events.onClose();
  }

  /** Stops accepting; open connections finish on their own. */
  stopAccepting(): void {
    this.listener?.stop(false);
    this.releaseClaim();
  }

  closeAll(): void {
    for (const link of [...this.links]) this.close(link);
    this.listener?.stop(true);
    this.releaseClaim();
    this.expiry.close();
  }

  private releaseClaim(): void {
    this.claim?.release();
    this.claim = undefined;
  }

  get openLinks(): number {
    return this.links.size;
  }
}
