/** mesh check's lines on a CA rotation: each says which step of the runbook may come next. */
import { expect, test } from "bun:test";
import { replicaLines, rotationLines } from "../../src/cli/check-rotation.ts";
import type { ReplicaRecord } from "../../src/control-plane/replica-presence.ts";
import type { SidecarCertificates } from "../../src/control-plane/sidecar-certificates.ts";

const held = (counts: Partial<SidecarCertificates>): SidecarCertificates => ({ currentIntermediate: 4, earlier: 0, offRoot: 0, unknown: 0, offRootNamed: [], unknownNamed: [], ...counts });
const steady = { bundleRoots: 1, rootReplaced: false, sidecarCertificates: held({}) };
const OLD = "default/orders at 10.0.0.3:15006 (certificate until 2026-12-08T10:00:00.000Z)";

test("no rotation: no line; a control plane older than these fields: none either", () => {
  expect(rotationLines(steady)).toEqual([]);
  expect(rotationLines({})).toEqual([]);
  // One that counted connections (before the registered sidecars were read).
  expect(rotationLines({ bundleRoots: 2, rootReplaced: false, sidecarCertificates: { currentIntermediate: 1, earlier: 1 } as SidecarCertificates })).toEqual([]);
});

test("the root replaced on disk since the replica started: fail, the restart comes next", () => {
  const lines = rotationLines({ ...steady, bundleRoots: 2, rootReplaced: true });
  expect(lines.map((l) => [l.ok, l.text.slice(0, 40)])).toEqual([[false, "the CA directory's root was replaced ('m"]]);
  expect(lines[0]!.fix).toContain("restart the replicas one at a time");
});

test("during the overlap, sidecars on the old root: fail, naming them, --complete must wait; none left: pass, it may follow", () => {
  const waiting = rotationLines({ ...steady, bundleRoots: 2, sidecarCertificates: held({ currentIntermediate: 3, offRoot: 1, offRootNamed: [OLD] }) });
  expect(waiting.map((l) => [l.ok, l.text])).toEqual([
    [false, `root rotation under way: 1 sidecar holds a certificate that does not chain to the current root; wait for them to renew (at about half their certificate's life): ${OLD}`],
  ]);
  expect(waiting[0]!.fix).toContain("--complete' now would leave them unable to renew");
  // Leaves of an intermediate retired under the new root are under it too.
  const ready = rotationLines({ ...steady, bundleRoots: 2, sidecarCertificates: held({ currentIntermediate: 3, earlier: 2 }) });
  expect(ready.map((l) => [l.ok, l.text])).toEqual([[true, "root rotation under way: all 5 registered sidecars hold a certificate under the current root; 'mesh ca rotate --complete' may follow"]]);
  expect(rotationLines({ ...steady, bundleRoots: 2, sidecarCertificates: held({ currentIntermediate: 0 }) })[0]!.text).toBe("root rotation under way: no sidecar is registered; 'mesh ca rotate --complete' may follow");
});

test("during the overlap, sidecars whose certificate is unknown (registered through an older replica): fail, as --complete refuses", () => {
  const lines = rotationLines({ ...steady, bundleRoots: 2, sidecarCertificates: held({ unknown: 12, unknownNamed: Array.from({ length: 10 }, (_, i) => `default/web at 10.0.0.${i}:15006`) }) });
  expect(lines.map((l) => l.ok)).toEqual([false]);
  expect(lines[0]!.text).toStartWith("root rotation under way: 12 sidecars were registered through a control plane that does not record certificates");
  expect(lines[0]!.text).toEndWith("default/web at 10.0.0.9:15006 and 2 more");
});

test("a bundle not taken: fail, naming why; an intermediate rotation's stragglers outside a root rotation: pass, said; sidecars on a dropped root: fail", () => {
  const refused = rotationLines({ ...steady, bundleRoots: 2, bundleError: "certs/bundle.pem: the bundle no longer holds the root this control plane signs under" });
  expect(refused.map((l) => [l.ok, l.text])).toEqual([[false, "the CA directory's bundle.pem is not the one sent to sidecars: certs/bundle.pem: the bundle no longer holds the root this control plane signs under"]]);
  const after = rotationLines({ ...steady, sidecarCertificates: held({ currentIntermediate: 2, earlier: 2 }) });
  expect(after.map((l) => [l.ok, l.text])).toEqual([[true, "2 of 4 registered sidecars hold a certificate of an earlier intermediate; they move to the current one as they renew"]]);
  const locked = rotationLines({ ...steady, sidecarCertificates: held({ offRoot: 1, offRootNamed: [OLD] }) });
  expect(locked.map((l) => l.ok)).toEqual([false]);
  expect(locked[0]!.fix).toContain("issue them new certificates");
});

test("replicas: how many are alive; each one under another root than the CA directory's fails, the one asked only once", () => {
  const replica = (id: string, rootKeyId: string): ReplicaRecord => ({ id, host: "cp", pid: id.length, version: "0.1.0", startedAt: "2026-12-08T00:00:00.000Z", api: `10.0.0.1:${8000 + id.length}`, rootKeyId });
  expect(replicaLines([replica("a", "r1")], { ...steady, rootKeyId: "r1" }, "a")).toEqual([{ ok: true, text: "1 control plane replica alive, signing under the CA directory's root" }]);
  expect(replicaLines([replica("a", "r1"), replica("bb", "r1")], { ...steady, rootKeyId: "r1" }, "a")[0]!.text).toBe("2 control plane replicas alive, all signing under the CA directory's root");
  // After --root, before any restart: the asked replica's own line says it (rootReplaced); the other is named here.
  const behind = replicaLines([replica("a", "r1"), replica("bb", "r1")], { ...steady, rootReplaced: true, rootKeyId: "r2" }, "a");
  expect(behind.map((l) => [l.ok, l.text.slice(0, 52)])).toEqual([[false, "the control plane replica on cp (pid 2, API 10.0.0.1"]]);
  expect(behind[0]!.fix).toContain("'mesh ca rotate --complete' waits for it");
  // A control plane older than replica records reports no root key id: nothing said.
  expect(replicaLines([replica("a", "r1")], steady, "a")).toEqual([]);
});
