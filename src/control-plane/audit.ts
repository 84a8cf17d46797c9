/**
 * The control plane's audit trail: one log line for every certificate it signs, every
 * request it refuses to sign, every join token minted or revoked, and every manifest an
 * admin changes; and counts of certificates for `/v1/status`. Lines carry `audit` (the
 * event) so they can be routed apart from the rest of the log. No secret is ever logged:
 * tokens by id only, never their text. Refusals past a budget a minute are counted in one
 * summary line instead (refusal-throttle.ts): anyone can send them.
 */
import type { Logger } from "../core/log.ts";
import { REFUSAL_THROTTLE, RefusalThrottle, type ThrottleOptions } from "./refusal-throttle.ts";

/** How a certificate was asked for: a join token at first start, or the caller's own certificate. */
export type SigningPath = "bootstrap" | "renewal";

export interface AuditCounts {
  issued: Record<SigningPath, number>;
  refused: Record<SigningPath, number>;
}

export interface IssuedEvent {
  via: SigningPath;
  spiffeId: string;
  serial: string;
  notAfter: string;
  /** The client's address and port, as the listener saw it. */
  peer?: string;
  /** The join token redeemed, by id (bootstrap). */
  tokenId?: string;
}

export interface RefusedEvent {
  via: SigningPath;
  reason: string;
  peer?: string;
  /** Who asked: the caller's SPIFFE ID (renewal) or the identity its token claims (bootstrap), when known. */
  claimed?: string;
  tokenId?: string;
}

/** A reason may quote what the client sent (a CSR's names): enough to see what was asked, never a whole body. */
const MAX_REASON = 300;

export class AuditLog {
  readonly counts: AuditCounts = { issued: { bootstrap: 0, renewal: 0 }, refused: { bootstrap: 0, renewal: 0 } };
  private readonly refusals: RefusalThrottle;

  constructor(
    private readonly log: Logger,
    throttle: ThrottleOptions = REFUSAL_THROTTLE,
  ) {
    this.refusals = new RefusalThrottle((s) => this.log.warn({ audit: "certificate-refusals-left-out", ...s }, "certificate requests refused past the log's budget, counted here"), throttle);
  }

  issued(e: IssuedEvent): void {
    this.counts.issued[e.via]++;
    this.log.info({ audit: "certificate-issued", ...e }, "certificate issued");
  }

  refused(e: RefusedEvent): void {
    this.counts.refused[e.via]++;
    if (!this.refusals.admit(e.peer?.replace(/:\d+$/, ""))) return;
    const reason = e.reason.length > MAX_REASON ? `${e.reason.slice(0, MAX_REASON)}…` : e.reason;
    this.log.warn({ audit: "certificate-refused", ...e, reason }, "certificate request refused");
  }

  /** Writes the summary of refusals left out of the log so far (a shutdown). */
  flush(): void {
    this.refusals.flush();
  }

  tokenMinted(e: { tokenId: string; spiffeId: string; uses: number; expiresAt: string; by: string }): void {
    this.log.info({ audit: "join-token-minted", ...e }, "join token minted");
  }

  tokenRevoked(e: { tokenId: string; by: string }): void {
    this.log.info({ audit: "join-token-revoked", ...e }, "join token revoked");
  }

  /**
   * `changes`: "Kind namespace/name outcome", one for each manifest that changed. `unconfirmed`:
   * the store's answer to the write was lost, so they may or may not have changed; logged all
   * the same, so no change that did go in is missing from the trail.
   */
  manifestsChanged(e: { changes: string[]; by: string; unconfirmed?: true }): void {
    if (e.changes.length === 0) return;
    if (e.unconfirmed) this.log.warn({ audit: "manifests-changed", ...e }, "manifests may have changed: the store's answer was lost");
    else this.log.info({ audit: "manifests-changed", ...e }, "manifests changed");
  }
}
