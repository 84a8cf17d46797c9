/** Registered sidecars read by the certificate each holds: one reading for `mesh check` and `--complete`. */
import { expect, test } from "bun:test";
import type { EndpointRecord } from "../../src/control-plane/registration.ts";
import { sidecarCertificates, wouldLockOut } from "../../src/control-plane/sidecar-certificates.ts";

const NOW = Date.parse("2026-12-08T00:00:00Z");
const LATER = "2026-12-08T12:00:00.000Z";
const signers = { current: "aa", underRoot: new Set(["aa", "bb"]) };

function endpoint(i: number, certificate?: EndpointRecord["certificate"]): EndpointRecord {
  return { namespace: "default", service: `s${i}`, address: "10.0.0.1", port: 15000 + i, weight: 1, identity: `spiffe://mesh.local/ns/default/sa/s${i}`, healthy: true, ...(certificate && { certificate }) };
}

test("each sidecar is counted by its certificate's signer: current, retired under the root, another root's, none recorded", () => {
  const held = sidecarCertificates(
    [endpoint(1, { issuerKeyId: "aa", notAfter: LATER }), endpoint(2, { issuerKeyId: "bb", notAfter: LATER }), endpoint(3, { issuerKeyId: "cc", notAfter: LATER }), endpoint(4, { notAfter: LATER }), endpoint(5)],
    signers,
    NOW,
  );
  expect(held).toEqual({
    currentIntermediate: 1,
    earlier: 1,
    offRoot: 2,
    unknown: 1,
    // A certificate without an authority key identifier cannot be shown to be under the root: the safe side.
    offRootNamed: [`default/s3 at 10.0.0.1:15003 (certificate until ${LATER})`, `default/s4 at 10.0.0.1:15004 (certificate until ${LATER})`],
    unknownNamed: ["default/s5 at 10.0.0.1:15005"],
  });
  expect(wouldLockOut(held)).toEqual([
    `2 sidecars hold a certificate that does not chain to the current root; wait for them to renew (at about half their certificate's life): ${held.offRootNamed.join(", ")}`,
    "1 sidecar was registered through a control plane that does not record certificates, so which root they are on cannot be told: default/s5 at 10.0.0.1:15005",
  ]);
});

test("a certificate past its end is left out; names stop at 10, the rest counted", () => {
  const ended = endpoint(0, { issuerKeyId: "cc", notAfter: "2026-12-07T23:59:59.000Z" });
  const many = Array.from({ length: 13 }, (_, i) => endpoint(i + 1, { issuerKeyId: "cc", notAfter: LATER }));
  const held = sidecarCertificates([ended, ...many], signers, NOW);
  expect([held.offRoot, held.offRootNamed.length, held.currentIntermediate + held.earlier + held.unknown]).toEqual([13, 10, 0]);
  expect(wouldLockOut(held)[0]).toEndWith(`default/s10 at 10.0.0.1:15010 (certificate until ${LATER}) and 3 more`);
  expect(wouldLockOut(sidecarCertificates([ended], signers, NOW))).toEqual([]);
});
