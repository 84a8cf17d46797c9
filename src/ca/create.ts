/** Creates a CA directory: a root, a signing intermediate and the trust bundle, all or nothing. */
import { existsSync } from "node:fs";
import { basename } from "node:path";
import { CantCreateError } from "../core/errors.ts";
import { createIntermediate, createRoot, bundlePem, type SigningCa } from "./authority.ts";
import { caPaths, type CaPaths } from "./layout.ts";
import { writeFileSet } from "../core/files.ts";
import { certToPem, exportPrivateKeyPem } from "../pki/x509.ts";

export async function createCaFiles(dir: string, trustDomain: string, force = false): Promise<{ paths: CaPaths; root: SigningCa; intermediate: SigningCa }> {
  const paths = caPaths(dir);
  const root = await createRoot(trustDomain);
  const intermediate = await createIntermediate(root, trustDomain);
  writeFileSet(
    [
      { path: paths.rootCert, content: certToPem(root.cert) },
      { path: paths.rootKey, content: await exportPrivateKeyPem(root.keys.privateKey), secret: true },
      { path: paths.intermediateCert, content: certToPem(intermediate.cert) },
      { path: paths.intermediateKey, content: await exportPrivateKeyPem(intermediate.keys.privateKey), secret: true },
      { path: paths.bundle, content: bundlePem([root.cert]) },
    ],
    { force },
  );
  return { paths, root, intermediate };
}

/**
 * Creates a CA in `dir` unless it holds one (an intermediate.pem); true when it did. Part of a
 * CA is refused, not completed: a new CA would replace a root that leaves may chain to.
 */
export async function createCaUnlessPresent(dir: string, trustDomain: string): Promise<boolean> {
  const paths = caPaths(dir);
  if (existsSync(paths.intermediateCert)) return false;
  const present = [paths.rootCert, paths.rootKey, paths.intermediateKey, paths.bundle].filter((p) => existsSync(p));
  if (present.length)
    throw new CantCreateError(
      `holds part of a CA (${present.map((p) => basename(p)).join(", ")}) but no intermediate.pem: put back intermediate.pem and intermediate.key, or use an empty directory for a new CA`,
      dir,
    );
  await createCaFiles(dir, trustDomain);
  return true;
}
