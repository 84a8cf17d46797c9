/** A certificate from the control plane is taken only for this sidecar's own identity, chained to roots it trusts now. */
import { beforeAll, expect, test } from "bun:test";
import { bundlePem, createIntermediate, createRoot, issueLeaf, type SigningCa } from "../../../src/ca/authority.ts";
import { certToPem, exportPrivateKeyPem, generateKeyPair } from "../../../src/pki/x509.ts";
import { workloadCertsFromPem, type WorkloadCerts } from "../../../src/proxy/certs.ts";
import { identityProblem } from "../../../src/proxy/control/signed-identity.ts";

const FILES = { chain: "chain.pem", key: "key.pem", bundle: "bundle.pem" };
interface Ca {
  root: SigningCa;
  intermediate: SigningCa;
}
let mesh: Ca, otherMesh: Ca, rotated: Ca, evil: Ca;
let current: WorkloadCerts;

async function newCa(trustDomain: string): Promise<Ca> {
  const root = await createRoot(trustDomain);
  return { root, intermediate: await createIntermediate(root, trustDomain) };
}

/** A workload certificate signed by `ca`'s intermediate, given with `roots` as its bundle. */
async function certs(ca: Ca, roots: Ca[], service = "orders", trustDomain = "mesh.local"): Promise<WorkloadCerts> {
  const keys = await generateKeyPair();
  const leaf = await issueLeaf(ca.intermediate, { trustDomain, namespace: "default", service, dnsNames: [], ttlMs: 3600_000, publicKey: keys.publicKey });
  const pem = { chainPem: certToPem(leaf.cert) + certToPem(ca.intermediate.cert), keyPem: await exportPrivateKeyPem(keys.privateKey), bundlePem: bundlePem(roots.map((r) => r.root.cert)) };
  return workloadCertsFromPem(pem, FILES);
}

beforeAll(async () => {
  [mesh, otherMesh, rotated, evil] = await Promise.all([newCa("mesh.local"), newCa("mesh.local"), newCa("mesh.local"), newCa("evil.local")]);
  current = await certs(mesh, [mesh]);
});

test("the same SPIFFE ID from the same CA is taken", async () => {
  expect(await identityProblem(await certs(mesh, [mesh]), current)).toBeUndefined();
});

test("another SPIFFE ID of the same trust domain is refused, naming both", async () => {
  expect(await identityProblem(await certs(mesh, [mesh], "admin"), current)).toBe(
    "the certificate is for spiffe://mesh.local/ns/default/sa/admin, and this sidecar is spiffe://mesh.local/ns/default/sa/orders",
  );
});

test("another trust domain is refused, even with a bundle that verifies it", async () => {
  expect(await identityProblem(await certs(evil, [evil], "orders", "evil.local"), current)).toContain("(trust domain evil.local, not mesh.local)");
});

test("the same SPIFFE ID from a CA not trusted now, with a bundle of only that CA, is refused", async () => {
  const problem = await identityProblem(await certs(otherMesh, [otherMesh]), current);
  expect(problem).toContain("does not chain to a root this sidecar trusts for mesh.local");
  expect(problem).toContain("the bundle sent with it lacks");
});

test("a root rotation is followed: first a leaf of the new root with a bundle keeping the old, then a bundle without it", async () => {
  const overlap = await certs(rotated, [rotated, mesh]);
  expect(await identityProblem(overlap, current)).toBeUndefined();
  expect(await identityProblem(await certs(rotated, [rotated]), overlap)).toBeUndefined();
  // Skipping the overlap, the new root vouches for nothing yet.
  expect(await identityProblem(await certs(rotated, [rotated]), current)).toContain("lacks");
});
