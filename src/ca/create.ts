/** Creates a CA directory: a root, a signing intermediate and the trust bundle, all or nothing. */
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
