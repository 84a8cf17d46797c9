/**
 * `mesh check`'s lines on a CA rotation in progress (control-plane/rotation-status.ts):
 * each says which step of the runbook (README, "Root rotation, live") may come next. The
 * sidecars are read as `mesh ca rotate --complete` reads them (sidecar-certificates.ts).
 */
import type { RotationStatus } from "../control-plane/rotation-status.ts";
import { replicasUnderOtherRoots, type ReplicaRecord } from "../control-plane/replica-presence.ts";
import { offRootSidecars, unknownSidecars } from "../control-plane/sidecar-certificates.ts";
import type { CheckLine } from "./check-store.ts";

/** `ca`: absent fields come from a control plane older than this check, which reports nothing here. */
export function rotationLines(ca: Partial<RotationStatus>): CheckLine[] {
  const lines: CheckLine[] = [];
  if (ca.bundleError !== undefined)
    lines.push({
      ok: false,
      text: `the CA directory's bundle.pem is not the one sent to sidecars: ${ca.bundleError}`,
      fix: "put the bundle with both roots back (the old root is kept in <ca-dir>/retired/) before anything restarts: a replica restarted on this one would sign under the new root alone while every sidecar's certificate chains to the old; then restart the replicas, let every leaf renew, and run 'mesh ca rotate --complete' again",
    });
  if (ca.rootReplaced)
    lines.push({
      ok: false,
      text: "the CA directory's root was replaced ('mesh ca rotate --root') since this replica started: it still signs under the old root",
      fix: "restart the replicas one at a time once every proxy is on the latest config (it carries the new root); leaves then renew under the new root",
    });
  const held = ca.sidecarCertificates;
  // Control planes before the registered sidecars were read counted connections instead: nothing said for those.
  if (held?.offRoot === undefined || ca.rootReplaced || ca.bundleError !== undefined) return lines;
  const all = held.currentIntermediate + held.earlier + held.offRoot + held.unknown;
  if ((ca.bundleRoots ?? 1) > 1) {
    if (held.offRoot) lines.push({ ok: false, text: `root rotation under way: ${offRootSidecars(held)}`, fix: "'mesh ca rotate --complete' now would leave them unable to renew" });
    if (held.unknown)
      lines.push({ ok: false, text: `root rotation under way: ${unknownSidecars(held)}`, fix: "upgrade the replicas they registered through: each sidecar's next heartbeat then records its certificate" });
    if (!held.offRoot && !held.unknown)
      lines.push({ ok: true, text: `root rotation under way: ${all === 0 ? "no sidecar is registered" : `all ${all} registered sidecars hold a certificate under the current root`}; 'mesh ca rotate --complete' may follow` });
  } else {
    // One root trusted, and sidecars on another: the old roots were dropped before they renewed (--force).
    if (held.offRoot) lines.push({ ok: false, text: offRootSidecars(held), fix: "their peers and the control plane refuse them: issue them new certificates ('mesh ca issue', or a new join token) and restart them" });
    if (held.earlier) lines.push({ ok: true, text: `${held.earlier} of ${all} registered sidecars hold a certificate of an earlier intermediate; they move to the current one as they renew` });
  }
  return lines;
}

/**
 * The replicas alive (their records in the store), each judged against the CA directory's
 * root as the replica asked reads it; that one, when its root was replaced, is said above.
 */
export function replicaLines(replicas: ReplicaRecord[], ca: Partial<RotationStatus>, asked: string | undefined): CheckLine[] {
  if (ca.rootKeyId === undefined) return [];
  const behind = replicasUnderOtherRoots(replicas, ca.rootKeyId, ca.rootReplaced ? asked : undefined);
  if (behind.length) return behind.map((text) => ({ ok: false, text, fix: "restart it once every proxy is on the latest config (it carries the new root); 'mesh ca rotate --complete' waits for it" }));
  const n = replicas.length;
  const alive = n === 1 ? "1 control plane replica alive" : `${n} control plane replicas alive`;
  return [{ ok: true, text: ca.rootReplaced ? alive : `${alive}, ${n === 1 ? "signing" : "all signing"} under the CA directory's root` }];
}
