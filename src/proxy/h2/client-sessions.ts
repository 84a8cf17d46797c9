/**
 * HTTP/2 client sessions to each upstream authority, shared by every stream to it: a
 * session multiplexes, so one connection per endpoint is what gRPC clients keep too, and
 * another is opened when those open are at the peer's stream limit, so one caller's
 * long-lived streams (watches, server streaming) never hold up everyone else's calls
 * (wire/client-session.ts). A session that is told GOAWAY, is retired, fails or closes is
 * forgotten; an idle one closes after the destination's idle timeout.
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

/** Sessions to one authority at most: past them, streams queue on the least loaded. */
const MAX_SESSIONS_PER_AUTHORITY = 32;

/** "host:port" or "[v6]:port" as host and port. */
function splitAuthority(authority: string): { host: string; port: number } {
  const colon = authority.lastIndexOf(":");
  const host = authority.slice(0, colon);
  return { host: host.startsWith("[") ? host.slice(1, -1) : host, port: Number(authority.slice(colon + 1)) };
}

export class H2Sessions {
  private readonly sessions = new Map<string, H2ClientSession[]>();
  /** Sessions opened so far. */
  created = 0;

  constructor(private readonly settings: H2SessionSettings) {}

  /** A session to `authority` (host:port) with room for a stream, open or opening; past the cap, the least loaded. */
  session(authority: string): H2ClientSession {
    const list = this.sessions.get(authority);
    if (list === undefined) return this.open(authority, []);
    let least: H2ClientSession | undefined;
    for (const s of list) {
      if (s.hasRoom) return s;
      if (least === undefined || s.load < least.load) least = s;
    }
    return list.length < MAX_SESSIONS_PER_AUTHORITY || least === undefined ? this.open(authority, list) : least;
  }

  private open(authority: string, list: H2ClientSession[]): H2ClientSession {
    const { tls, connectTimeoutMs, idleTimeoutMs } = this.settings;
    const s = new H2ClientSession(
      { ...splitAuthority(authority), tls, connectTimeoutMs, idleTimeoutMs },
      {
        unusable: (gone) => {
          const i = list.indexOf(gone);
          if (i >= 0) list.splice(i, 1);
          if (list.length === 0 && this.sessions.get(authority) === list) this.sessions.delete(authority);
        },
      },
    );
    this.created++;
    list.push(s);
    this.sessions.set(authority, list);
    return s;
  }

  /** Retires the sessions of authorities not in `keep`; their streams in flight finish. */
  retain(keep: ReadonlySet<string>): void {
    for (const [authority, list] of [...this.sessions]) if (!keep.has(authority)) for (const s of [...list]) s.retire();
  }

  /** Sessions open or opening. */
  get size(): number {
    let n = 0;
    for (const list of this.sessions.values()) n += list.length;
    return n;
  }

  close(): void {
    for (const list of [...this.sessions.values()]) for (const s of [...list]) s.retire();
    this.sessions.clear();
  }
}
