/** mesh check's lines on a CA rotation: each says which step of the runbook may come next. */
import { expect, test } from "bun:test";
import { rotationLines } from "../../src/cli/check-rotation.ts";

const steady = { bundleRoots: 1, rootReplaced: false, sidecarCertificates: { currentIntermediate: 4, earlier: 0 } };

test("no rotation: no line; a control plane older than these fields: none either", () => {
  expect(rotationLines(steady)).toEqual([]);
  expect(rotationLines({})).toEqual([]);
});

test("the root replaced on disk since the replica started: fail, the restart comes next", () => {
  const lines = rotationLines({ ...steady, bundleRoots: 2, rootReplaced: true });
  expect(lines.map((l) => [l.ok, l.text.slice(0, 40)])).toEqual([[false, "the CA directory's root was replaced ('m"]]);
  expect(lines[0]!.fix).toContain("restart the replicas one at a time");
});

test("during the overlap, leaves of an earlier intermediate: fail, --complete must wait; none left: pass, it may follow", () => {
  const waiting = rotationLines({ ...steady, bundleRoots: 2, sidecarCertificates: { currentIntermediate: 3, earlier: 1 } });
  expect(waiting.map((l) => [l.ok, l.text])).toEqual([[false, "root rotation under way: 1 of 4 sidecar connections carry a certificate of an earlier intermediate"]]);
  const ready = rotationLines({ ...steady, bundleRoots: 2 });
  expect(ready.map((l) => l.ok)).toEqual([true]);
  expect(ready[0]!.text).toContain("'mesh ca rotate --complete' may follow");
});

test("a bundle not taken: fail, naming why; an intermediate rotation's stragglers outside a root rotation: pass, said", () => {
  const refused = rotationLines({ ...steady, bundleRoots: 2, bundleError: "certs/bundle.pem: the bundle no longer holds the root this control plane signs under" });
  expect(refused.map((l) => [l.ok, l.text])).toEqual([[false, "the CA directory's bundle.pem is not the one sent to sidecars: certs/bundle.pem: the bundle no longer holds the root this control plane signs under"]]);
  const after = rotationLines({ ...steady, sidecarCertificates: { currentIntermediate: 2, earlier: 2 } });
  expect(after.map((l) => [l.ok, l.text])).toEqual([[true, "2 of 4 sidecar connections carry a certificate of an earlier intermediate; they move to the current one as they renew"]]);
});
