/**
 * HTTP/2 client sessions, one per upstream authority, shared by every stream to it: a
 * session multiplexes, so one connection per endpoint is what gRPC clients keep too. A
 * session that is told GOAWAY, fails or closes is forgotten, and the next stream opens a
 * new one; an idle one closes after the destination's idle timeout.
 */
import http2, { type ClientHttp2Session, type SecureClientSessionOptions } from "node:http2";
import { PeerIdentityError } from "../errors.ts";
import type { VerifyPeer } from "../transport/h1/tls-verify.ts";

export interface H2SessionSettings {
  /** undefined: h2c (prior knowledge) to a plain upstream. */
  tls?: { cert: string; key: string; ca: string; verifyPeer?: VerifyPeer };
  /** Longest from opening a session until the peer's SETTINGS arrive (handshakes included): past it the session is ended. */
  connectTimeoutMs: number;
  idleTimeoutMs: number;
}

/**
 * Streams a session may see cancelled before it is retired (closed gracefully, its calls
 * in flight finishing, new ones on a fresh session). A peer counts resets per session
 * against rapid reset (Bun's own server cuts a session after about a thousand, ending
 * every call on it), and one session carries many callers' calls: without this, a
 * caller that cancels in a loop would get everyone's calls cut.
 */
const CANCELS_PER_SESSION = 100;
const cancels = new WeakMap<ClientHttp2Session, { count: number; retire: () => void }>();

/** A stream of `session` was cancelled before its response was complete. */
export function noteCancelled(session: ClientHttp2Session): void {
  const c = cancels.get(session);
  if (c !== undefined && ++c.count === CANCELS_PER_SESSION) c.retire();
}

/** Why a session's TLS handshake refused its peer, if our identity check did: Bun reports it as a hostname mismatch. */
const refusals = new WeakMap<ClientHttp2Session, Error>();

export function identityRefusal(session: ClientHttp2Session): Error | undefined {
  return refusals.get(session);
}

/**
 * Sessions whose peer's SETTINGS arrived. Until then a client does not know the peer's
 * stream limit, and Bun 1.4.5's client opens every stream asked of it (it ignores
 * peerMaxConcurrentStreams); Bun's server refuses those past its limit and then ends the
 * whole session with ENHANCE_YOUR_CALM, cutting the calls it had taken (measured: 300
 * streams at once on a new session, 101 of them cut). Once it knows the limit, the client
 * queues streams past it.
 */
const settled = new WeakSet<ClientHttp2Session>();

/** Whether `session` knows its peer's SETTINGS: its streams may be opened at once. */
export function isSettled(session: ClientHttp2Session): boolean {
  return settled.has(session);
}

interface SettleWaiter {
  go(): void;
  failed(err: Error): void;
}

/** What waits for each unsettled session: one set of listeners per session, however many streams wait. */
const waiting = new WeakMap<ClientHttp2Session, Set<SettleWaiter>>();

/**
 * Runs `go` once `session` knows its peer's SETTINGS, or `failed` if the session ends
 * first (H2Sessions ends one that has not settled within its connect timeout). Returns
 * what stops the wait: a call that ends meanwhile is let go of. For a session not settled
 * yet (isSettled): on a settled one `go` runs before this returns.
 */
export function whenSettled(session: ClientHttp2Session, go: () => void, failed: (err: Error) => void): () => void {
  if (settled.has(session)) {
    go();
    return NOTHING_TO_STOP;
  }
  const waiter: SettleWaiter = { go, failed };
  const known = waiting.get(session);
  if (known !== undefined) {
    known.add(waiter);
    return () => known.delete(waiter);
  }
  const waiters = new Set<SettleWaiter>([waiter]);
  waiting.set(session, waiters);
  const settle = (err: Error | undefined) => {
    session.off("remoteSettings", onSettings);
    session.off("error", onError);
    session.off("close", onClose);
    waiting.delete(session);
    for (const w of waiters) err === undefined ? w.go() : w.failed(err);
    waiters.clear();
  };
  const onSettings = () => settle(undefined);
  const onError = (err: Error) => settle(err);
  const onClose = () => settle(new Error("the session closed before the peer's settings arrived"));
  session.on("remoteSettings", onSettings);
  session.on("error", onError);
  session.on("close", onClose);
  return () => waiters.delete(waiter);
}

const NOTHING_TO_STOP = () => {};

/** Sessions that connected (TLS handshake and peer check passed): a stream on one may have been sent. */
const connected = new WeakSet<ClientHttp2Session>();

/** Whether `session` connected: a failure of its stream after that may come after the request reached the peer. */
export function sessionConnected(session: ClientHttp2Session): boolean {
  return connected.has(session);
}

export class H2Sessions {
  private readonly sessions = new Map<string, ClientHttp2Session>();
  /** Sessions opened so far. */
  created = 0;

  constructor(private readonly settings: H2SessionSettings) {}

  /** A session to `authority` (host:port), open or opening. */
  session(authority: string): ClientHttp2Session {
    const known = this.sessions.get(authority);
    if (known !== undefined && !known.closed && !known.destroyed) return known;
    const s = this.open(authority);
    this.created++;
    this.sessions.set(authority, s);
    const forget = () => {
      if (this.sessions.get(authority) === s) this.sessions.delete(authority);
    };
    s.once("connect", () => connected.add(s));
    // A peer that never says its SETTINGS would hold every stream waiting for them (whenSettled).
    const { connectTimeoutMs } = this.settings;
    const unsettled = setTimeout(() => s.destroy(new Error(`no HTTP/2 settings from the peer within ${connectTimeoutMs} ms`)), connectTimeoutMs);
    s.once("remoteSettings", () => {
      clearTimeout(unsettled);
      settled.add(s);
    });
    s.once("close", () => clearTimeout(unsettled));
    s.on("goaway", forget);
    s.on("close", forget);
    // A session's failure is each stream's: they report it; unheard here it would throw.
    s.on("error", forget);
    s.setTimeout(this.settings.idleTimeoutMs, () => s.close());
    cancels.set(s, {
      count: 0,
      retire: () => {
        forget();
        s.close();
      },
    });
    return s;
  }

  /** Closes the sessions of authorities not in `keep`; their streams in flight finish. */
  retain(keep: ReadonlySet<string>): void {
    for (const [authority, s] of this.sessions) {
      if (keep.has(authority)) continue;
      s.close();
      this.sessions.delete(authority);
    }
  }

  get size(): number {
    return this.sessions.size;
  }

  close(): void {
    for (const s of this.sessions.values()) s.close();
    this.sessions.clear();
  }

  private open(authority: string): ClientHttp2Session {
    const tls = this.settings.tls;
    if (tls === undefined) return http2.connect(`http://${authority}`);
    let session: ClientHttp2Session;
    const options: SecureClientSessionOptions = {
      cert: tls.cert,
      key: tls.key,
      ca: tls.ca,
      rejectUnauthorized: true,
      // The peer is checked by its SPIFFE ID (destinations.ts), once per session, in the handshake: no stream is sent to a wrong peer.
      checkServerIdentity: (_host, cert) => {
        const refused = tls.verifyPeer?.(new Uint8Array((cert as { raw?: Uint8Array }).raw ?? []));
        if (refused !== undefined) refusals.set(session, refused instanceof PeerIdentityError ? refused : new PeerIdentityError(refused.message));
        return refused;
      },
    };
    session = http2.connect(`https://${authority}`, options);
    return session;
  }
}
