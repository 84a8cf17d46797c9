/**
 * HTTP/2 client sessions, one per upstream authority, shared by every stream to it: a
 * session multiplexes, so one connection per endpoint is what gRPC clients keep too. A
 * session that is told GOAWAY, is retired, fails or closes is forgotten, and the next
 * stream opens a new one (wire/client-session.ts); an idle one closes after the
 * destination's idle timeout.
 */
import type { VerifyPeer } from "../transport/h1/tls-verify.ts";
import { H2ClientSession } from "./wire/client-session.ts";

export interface H2SessionSettings {
  /** undefined: h2c (prior knowledge) to a plain upstream. */
  tls?: { cert: string; key: string; ca: string; verifyPeer: VerifyPeer };
  /** Longest from opening a session until the peer's SETTINGS arrive (handshakes included): past it the session is ended. */
  connectTimeoutMs: number;
  idleTimeoutMs: number;
}

/** "host:port" or "[v6]:port" as host and port. */
function splitAuthority(authority: string): { host: string; port: number } {
  const colon = authority.lastIndexOf(":");
  const host = authority.slice(0, colon);
  return { host: host.startsWith("[") ? host.slice(1, -1) : host, port: Number(authority.slice(colon + 1)) };
}

export class H2Sessions {
  private readonly sessions = new Map<string, H2ClientSession>();
  /** Sessions opened so far. */
  created = 0;

  constructor(private readonly settings: H2SessionSettings) {}

  /** A session to `authority` (host:port), open or opening. */
  session(authority: string): H2ClientSession {
    const known = this.sessions.get(authority);
    if (known !== undefined && known.usable) return known;
    const { tls, connectTimeoutMs, idleTimeoutMs } = this.settings;
    const s = new H2ClientSession(
      { ...splitAuthority(authority), tls, connectTimeoutMs, idleTimeoutMs },
      {
        unusable: (gone) => {
          if (this.sessions.get(authority) === gone) this.sessions.delete(authority);
        },
      },
    );
    this.created++;
    this.sessions.set(authority, s);
    return s;
  }

  /** Retires the sessions of authorities not in `keep`; their streams in flight finish. */
  retain(keep: ReadonlySet<string>): void {
    for (const [authority, s] of this.sessions) if (!keep.has(authority)) s.retire();
  }

  get size(): number {
    return this.sessions.size;
  }

  close(): void {
    for (const s of [...this.sessions.values()]) s.retire();
    this.sessions.clear();
  }
}
