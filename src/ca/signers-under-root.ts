/**
 * Which signing keys a CA directory's current root stands behind: the intermediate it signs
 * with now, and those it retired since its root last changed (a leaf they signed still
 * chains to the current root). A leaf signed by any other key chains to a root that
 * `mesh ca rotate --complete` would drop.
 */
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { asCertificate, parseCertificatesAt, type LoadedCa } from "./authority.ts";

/** The signing keys a CA directory stands behind, as subject key identifiers (hex). */
export interface Signers {
  /** The intermediate it signs with now. */
  current: string | undefined;
  /** That one and those retired under the current root. */
  underRoot: ReadonlySet<string>;
}

export function signersOf(ca: LoadedCa): Signers {
  return { current: asCertificate(ca.intermediate.cert).known.subjectKeyId, underRoot: signerKeyIdsUnderRoot(ca) };
}

/** Subject key identifiers (hex), as a leaf's authority key identifier names its signer. */
export function signerKeyIdsUnderRoot(ca: LoadedCa): Set<string> {
  const rootKeyId = asCertificate(ca.root).known.subjectKeyId;
  const ids = new Set<string>();
  const current = asCertificate(ca.intermediate.cert).known.subjectKeyId;
  if (current !== undefined) ids.add(current);
  for (const retired of retiredIntermediates(ca)) {
    const { subjectKeyId, authorityKeyId } = retired.known;
    if (subjectKeyId !== undefined && rootKeyId !== undefined && authorityKeyId === rootKeyId) ids.add(subjectKeyId);
  }
  return ids;
}

/** Unreadable files are passed over: leaving a key out only makes its leaves count as on an old root, the safe side. */
function retiredIntermediates(ca: LoadedCa) {
  let names: string[];
  try {
    names = readdirSync(ca.paths.retired).filter((n) => n.startsWith("intermediate-") && n.endsWith(".pem"));
  } catch {
    return [];
  }
  return names.flatMap((name) => {
    try {
      return parseCertificatesAt(join(ca.paths.retired, name), "retired intermediate").map(asCertificate);
    } catch {
      return [];
    }
  });
}
