/**
 * Registered sidecars by the certificate each one's own connection last proved (kept with
 * its endpoint record, registration.ts): signed by the CA's current intermediate, by an
 * earlier one under the same root (it moves as it renews), or by a key under no root the
 * CA directory still stands behind, which `mesh ca rotate --complete` would lock out. One
 * reading for `mesh check` (from a replica's view of the store) and `--complete` (from
 * `/v1/endpoints`), so the two cannot disagree on who holds what.
 */
import type { Signers } from "../ca/signers-under-root.ts";
import type { EndpointRecord } from "./registration.ts";

/** At most this many sidecars are named in each list; the rest are counted. */
const NAMED = 10;

export interface SidecarCertificates {
  currentIntermediate: number;
  /** Signed by an intermediate retired under the current root. */
  earlier: number;
  /** Signed by a key under another root: `--complete` now would leave them unable to renew. */
  offRoot: number;
  /** Registered through a control plane that recorded no certificate: their root cannot be told. */
  unknown: number;
  /** The first of each, as "namespace/service at address:port". */
  offRootNamed: string[];
  unknownNamed: string[];
}

/** Certificates already past their end are left out: they no longer open anything, on any root. */
export function sidecarCertificates(endpoints: Iterable<EndpointRecord>, signers: Signers, now = Date.now()): SidecarCertificates {
  const counts: SidecarCertificates = { currentIntermediate: 0, earlier: 0, offRoot: 0, unknown: 0, offRootNamed: [], unknownNamed: [] };
  for (const e of endpoints) {
    const held = e.certificate;
    const who = `${e.namespace}/${e.service} at ${e.address}:${e.port}`;
    if (held === undefined) {
      if (counts.unknown++ < NAMED) counts.unknownNamed.push(who);
    } else if (Date.parse(held.notAfter) <= now) continue;
    else if (held.issuerKeyId !== undefined && held.issuerKeyId === signers.current) counts.currentIntermediate++;
    else if (held.issuerKeyId !== undefined && signers.underRoot.has(held.issuerKeyId)) counts.earlier++;
    else if (counts.offRoot++ < NAMED) counts.offRootNamed.push(`${who} (certificate until ${held.notAfter})`);
  }
  return counts;
}

/** Why dropping the old roots now would lock sidecars out, one sentence per reason; empty when it would not. */
export function wouldLockOut(held: SidecarCertificates): string[] {
  const lines: string[] = [];
  if (held.offRoot) lines.push(offRootSidecars(held));
  if (held.unknown) lines.push(unknownSidecars(held));
  return lines;
}

export function offRootSidecars(held: SidecarCertificates): string {
  return `${sidecars(held.offRoot, "holds", "hold")} a certificate that does not chain to the current root; wait for them to renew (at about half their certificate's life): ${namedOf(held.offRootNamed, held.offRoot)}`;
}

export function unknownSidecars(held: SidecarCertificates): string {
  return `${sidecars(held.unknown, "was", "were")} registered through a control plane that does not record certificates, so which root they are on cannot be told: ${namedOf(held.unknownNamed, held.unknown)}`;
}

function sidecars(n: number, one: string, many: string): string {
  return n === 1 ? `1 sidecar ${one}` : `${n} sidecars ${many}`;
}

/** "a, b and 3 more": the named ones of `total`. */
function namedOf(named: string[], total: number): string {
  return total > named.length ? `${named.join(", ")} and ${total - named.length} more` : named.join(", ");
}
