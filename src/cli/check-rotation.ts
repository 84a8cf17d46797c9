/**
 * `mesh check`'s lines on a CA rotation in progress (control-plane/rotation-status.ts):
 * each says which step of the runbook (README, "Root rotation, live") may come next.
 */
import type { RotationStatus } from "../control-plane/rotation-status.ts";
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
  const c = ca.sidecarCertificates;
  if (c === undefined || ca.rootReplaced || ca.bundleError !== undefined) return lines;
  const all = c.currentIntermediate + c.earlier;
  if ((ca.bundleRoots ?? 1) > 1) {
    if (c.earlier > 0)
      lines.push({
        ok: false,
        text: `root rotation under way: ${c.earlier} of ${all} sidecar connections carry a certificate of an earlier intermediate`,
        fix: "wait for those sidecars to renew (at about half their certificate's life); 'mesh ca rotate --complete' now would leave them unable to renew",
      });
    else lines.push({ ok: true, text: `root rotation under way: all ${all} sidecar connections carry a certificate of the intermediate this replica signs with; 'mesh ca rotate --complete' may follow` });
  } else if (c.earlier > 0) {
    lines.push({ ok: true, text: `${c.earlier} of ${all} sidecar connections carry a certificate of an earlier intermediate; they move to the current one as they renew` });
  }
  return lines;
}
