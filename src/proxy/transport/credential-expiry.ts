/**
 * A connection lives no longer than the certificates that proved it. A TLS handshake
 * checks validity once; without this, a kept-alive HTTP/1.1 connection, a mux session, an
 * HTTP/2 tunnel or a carried TCP stream would go on for days after its caller's
 * certificate ended, or after the root it chained to left the trust bundle.
 *
 * Each mTLS connection is watched until the earlier of its peer's and its own
 * certificate's end:
 *  - shortly before it (a minute, or a quarter of the time left when it opened), the
 *    connection is retired: asked to end gracefully (an HTTP/1.1 connection after its
 *    response, a session or an HTTP/2 tunnel by GOAWAY), so its caller moves to a new
 *    connection, and a new handshake, without a failed request;
 *  - at it, whatever is still open is cut.
 * One timer, armed for the earliest moment due, and a sweep when it fires: expiries are
 * rare events, and connections many.
 */
import { decodePem } from "../../pki/pem.ts";
import { timerDelay } from "../../core/timer-delay.ts";

/** How long before its end a connection is asked to move, at most. */
const RETIRE_LEAD_MS = 60_000;

/** Why a connection was asked to end (retired) or ended (cut). */
export type CredentialEnd = "certificate-expiring" | "certificate-expired" | "rotation" | "trust-withdrawn";

interface Watch {
  expiresAt: number;
  retireAt: number;
  retired: boolean;
  /** Its cut was brought forward: the root that proved it left the bundle. */
  withdrawn: boolean;
}

export class CredentialExpiry<C> {
  private readonly watched = new Map<C, Watch>();
  private timer: Timer | undefined;
  private armedFor = Infinity;

  /** `retire`: end gracefully; `cut`: end now. Either may forget() the connection at once. */
  constructor(
    private readonly retire: (conn: C, why: CredentialEnd) => void,
    private readonly cut: (conn: C, why: CredentialEnd) => void,
    private readonly now: () => number = Date.now,
  ) {}

  get size(): number {
    return this.watched.size;
  }

  /** `expiresAtMs`: epoch ms (certificate time) after which `conn` must not carry a byte. */
  watch(conn: C, expiresAtMs: number): void {
    const now = this.now();
    const lead = Math.min(RETIRE_LEAD_MS, Math.max(0, expiresAtMs - now) / 4);
    this.watched.set(conn, { expiresAt: expiresAtMs, retireAt: expiresAtMs - lead, retired: false, withdrawn: false });
    this.arm(expiresAtMs - lead, now);
  }

  /** It closed. */
  forget(conn: C): void {
    this.watched.delete(conn);
  }

  /**
   * Every watched connection is retired now (a new certificate or bundle: new connections
   * get them), and cut at `cutByMs` if it ends later than that (a root was withdrawn).
   */
  retireAll(cutByMs = Infinity): void {
    for (const conn of [...this.watched.keys()]) this.retireNow(conn, cutByMs);
  }

  /** `conn` is retired now, and cut at `cutByMs` if it ends later than that. */
  retireNow(conn: C, cutByMs = Infinity): void {
    const w = this.watched.get(conn);
    if (w === undefined) return;
    if (cutByMs < w.expiresAt) {
      w.expiresAt = cutByMs;
      w.withdrawn = true;
      this.arm(cutByMs, this.now());
    }
    if (w.retired) return;
    w.retired = true;
    this.retire(conn, w.withdrawn ? "trust-withdrawn" : "rotation");
  }

  close(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.armedFor = Infinity;
    this.watched.clear();
  }

  private arm(at: number, now: number): void {
    if (at >= this.armedFor) return;
    clearTimeout(this.timer);
    this.armedFor = at;
    this.timer = setTimeout(() => this.sweep(), timerDelay(at - now, 1));
    this.timer.unref();
  }

  private sweep(): void {
    this.timer = undefined;
    this.armedFor = Infinity;
    const now = this.now();
    let next = Infinity;
    for (const [conn, w] of this.watched) {
      if (now >= w.expiresAt) {
        this.watched.delete(conn);
        this.cut(conn, w.withdrawn ? "trust-withdrawn" : "certificate-expired");
        continue;
      }
      if (!w.retired && now >= w.retireAt) {
        w.retired = true;
        this.retire(conn, "certificate-expiring");
        if (!this.watched.has(conn)) continue;
      }
      next = Math.min(next, w.retired ? w.expiresAt : w.retireAt);
    }
    if (next !== Infinity) this.arm(next, now);
  }
}

/** Whether a trust bundle lost a root it held (PEM texts): connections that chained to it are no longer proven. */
export function trustWithdrawn(beforePem: string, afterPem: string): boolean {
  const after = new Set(decodePem(afterPem).map((b) => Buffer.from(b.der).toString("base64")));
  return decodePem(beforePem).some((b) => b.type === "CERTIFICATE" && !after.has(Buffer.from(b.der).toString("base64")));
}
