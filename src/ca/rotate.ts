/**
 * Rotation. An intermediate is replaced in place: leaves it signed stay valid because
 * they carry it in their chain and the root is unchanged. A root is replaced in two
 * steps: first a bundle that trusts old and new, distributed to every peer; then,
 * once every leaf chains to the new root, `--complete` drops the old one.
 */
import { join } from "node:path";
import { DataError } from "../core/errors.ts";
import { writeFileSet, type OutputFile } from "../core/files.ts";
import { certToPem, exportPrivateKeyPem, x509 } from "../pki/x509.ts";
import { MAX_LEAF_TTL_MS } from "./lifetimes.ts";
import { bundlePem, createIntermediate, createRoot, loadCa, loadRootSigner, type LoadedCa, type SigningCa } from "./authority.ts";

function retire(ca: LoadedCa, cert: x509.X509Certificate, role: string): OutputFile {
  return { path: join(ca.paths.retired, `${role}-${cert.serialNumber.slice(0, 16)}.pem`), content: certToPem(cert) };
}

async function signerFiles(ca: LoadedCa, kind: "root" | "intermediate", s: SigningCa): Promise<OutputFile[]> {
  const cert = kind === "root" ? ca.paths.rootCert : ca.paths.intermediateCert;
  const key = kind === "root" ? ca.paths.rootKey : ca.paths.intermediateKey;
  return [
    { path: cert, content: certToPem(s.cert) },
    { path: key, content: await exportPrivateKeyPem(s.keys.privateKey), secret: true },
  ];
}

/**
 * The least an intermediate must live to be worth cutting: one leaf of the longest lifetime it
 * may sign. An intermediate ends with its root at the latest, and leaves end with it; under a
 * root nearer its end than this, a new intermediate would cut leaves short from its first
 * day (or be born expired): it is the root that needs replacing.
 */
const MIN_INTERMEDIATE_LIFE_MS = MAX_LEAF_TTL_MS;

function assertRootOutlivesIntermediate(ca: LoadedCa, now: Date): void {
  const end = ca.root.notAfter;
  const fix = `run 'mesh ca rotate --root --ca-dir ${ca.paths.dir}' for a new root and intermediate`;
  if (end.getTime() <= now.getTime())
    throw new DataError(`root certificate expired at ${end.toISOString()}, so an intermediate it signs would be born expired; ${fix}`, ca.paths.rootCert);
  if (end.getTime() - now.getTime() < MIN_INTERMEDIATE_LIFE_MS)
    throw new DataError(
      `root certificate ends at ${end.toISOString()}, sooner than the ${MIN_INTERMEDIATE_LIFE_MS / 86_400_000} days a new intermediate must live ` +
        `(the longest workload certificate it signs); ${fix}`,
      ca.paths.rootCert,
    );
}

export async function rotateIntermediate(dir: string, now = new Date()): Promise<SigningCa> {
  const ca = await loadCa(dir, { replacingIntermediate: true });
  assertRootOutlivesIntermediate(ca, now);
  const root = await loadRootSigner(ca.paths);
  const next = await createIntermediate(root, ca.trustDomain, now);
  writeFileSet([retire(ca, ca.intermediate.cert, "intermediate")], { force: false });
  writeFileSet(await signerFiles(ca, "intermediate", next), { force: true });
  return next;
}

/** New root and intermediate; the bundle trusts the new root and every unexpired old one. */
export async function rotateRoot(dir: string, now = new Date()): Promise<{ root: SigningCa; bundle: x509.X509Certificate[] }> {
  const ca = await loadCa(dir, { replacingIntermediate: true });
  await loadRootSigner(ca.paths); // refuse to rotate a CA whose root key is not here or does not match
  const root = await createRoot(ca.trustDomain, now);
  const intermediate = await createIntermediate(root, ca.trustDomain, now);
  const bundle = [root.cert, ...ca.bundle.filter((c) => c.notAfter > now)];
  writeFileSet([retire(ca, ca.root, "root"), retire(ca, ca.intermediate.cert, "intermediate")], { force: false });
  writeFileSet(
    [
      ...(await signerFiles(ca, "root", root)),
      ...(await signerFiles(ca, "intermediate", intermediate)),
      { path: ca.paths.bundle, content: bundlePem(bundle) },
    ],
    { force: true },
  );
  return { root, bundle };
}

/**
 * Ends a root overlap: the bundle trusts only the current root. `confirm` runs before anything
 * is written, and may refuse by throwing (the CLI asks a running control plane).
 */
export async function completeRootRotation(dir: string, confirm?: (ca: LoadedCa) => Promise<void>): Promise<x509.X509Certificate[]> {
  const ca = await loadCa(dir);
  const dropped = ca.bundle.filter((c) => !c.equal(ca.root));
  if (dropped.length === 0) throw new DataError("the bundle already trusts only the current root", ca.paths.bundle);
  await confirm?.(ca);
  writeFileSet([{ path: ca.paths.bundle, content: bundlePem([ca.root]) }], { force: true });
  return dropped;
}
