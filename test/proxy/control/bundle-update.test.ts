/** The trust bundle sent with config: taken when the sidecar's own certificate still verifies under it, else a renewal, else refused. */
import { beforeAll, expect, test } from "bun:test";
import { bundlePem, createIntermediate, createRoot, issueLeaf, type SigningCa } from "../../../src/ca/authority.ts";
import { certToPem, exportPrivateKeyPem, generateKeyPair } from "../../../src/pki/x509.ts";
import { workloadCertsFromPem, type WorkloadCerts } from "../../../src/proxy/certs.ts";
import { bundleUpdate } from "../../../src/proxy/control/bundle-update.ts";

const FILES = { chain: "chain.pem", key: "key.pem", bundle: "bundle.pem" };
let old: SigningCa, next: SigningCa, partner: SigningCa;
let current: WorkloadCerts;

beforeAll(async () => {
  [old, next, partner] = await Promise.all([createRoot("mesh.local"), createRoot("mesh.local"), createRoot("partner.example")]);
  const intermediate = await createIntermediate(old, "mesh.local");
  const keys = await generateKeyPair();
  const leaf = await issueLeaf(intermediate, { trustDomain: "mesh.local", namespace: "default", service: "orders", dnsNames: [], ttlMs: 3600_000, publicKey: keys.publicKey });
  current = await workloadCertsFromPem(
    { chainPem: certToPem(leaf.cert) + certToPem(intermediate.cert), keyPem: await exportPrivateKeyPem(keys.privateKey), bundlePem: bundlePem([old.cert]) },
    FILES,
  );
});

test("the bundle in use: nothing to do", async () => {
  expect(await bundleUpdate(current, current.bundleText)).toEqual({ kind: "same" });
});

test("a rotation's bundle (new root beside the old): taken with the certificate in use, TLS given both roots", async () => {
  const update = await bundleUpdate(current, bundlePem([next.cert, old.cert]));
  if (update.kind !== "take") throw new Error(`expected take, got ${JSON.stringify(update)}`);
  expect({ roots: update.roots, id: update.certs.spiffeId, chain: update.certs.chainPem === current.chainPem }).toEqual({ roots: 2, id: current.spiffeId, chain: true });
  expect(update.certs.bundlePem.split("BEGIN CERTIFICATE").length - 1).toBe(2);
});

test("a federated partner's root beside the own: taken, and TLS still given only the own domain's root", async () => {
  const update = await bundleUpdate(current, bundlePem([old.cert, partner.cert]));
  if (update.kind !== "take") throw new Error(`expected take, got ${JSON.stringify(update)}`);
  expect({ roots: update.roots, tls: update.certs.bundlePem }).toEqual({ roots: 1, tls: certToPem(old.cert) });
});

test("a bundle without the root of the certificate in use: renew, saying why", async () => {
  const update = await bundleUpdate(current, bundlePem([next.cert]));
  expect(update.kind).toBe("renew");
  expect(update.kind === "renew" && update.reason).toContain("own certificate does not verify against the trust bundle");
});

test("no root of the sidecar's trust domain, or no certificate at all: refused, naming what is wrong", async () => {
  expect(await bundleUpdate(current, bundlePem([partner.cert]))).toEqual({
    kind: "refused",
    reason: "the config's trust bundle holds no root for mesh.local, this sidecar's trust domain",
  });
  const garbage = await bundleUpdate(current, "not a certificate");
  expect(garbage.kind).toBe("refused");
  expect(garbage.kind === "refused" && garbage.reason).toContain("the config's trust bundle");
});
