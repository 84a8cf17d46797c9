/**
 * The proxy's own workload identity: key, chain and trust bundle, checked at start
 * so a wrong or expired certificate is refused with the file named, before any
 * listener opens.
 */
import { join } from "node:path";
import { workloadPaths } from "../ca/layout.ts";
import { DataError, UsageError } from "../core/errors.ts";
import { readTextFile } from "../core/files.ts";
import { assertKeyMatches, importKeyText, readCertificates } from "../pki/load.ts";
import { encodePem } from "../pki/pem.ts";
import { TrustBundle, verifyPeerChain } from "../pki/verify.ts";
import type { ListenerTls } from "./transport/h1-server/listener.ts";

export interface CertSources {
  certsDir?: string;
  cert?: string;
  key?: string;
  ca?: string;
}

export interface WorkloadCerts {
  /** Leaf then intermediates: what this proxy presents. */
  chainPem: string;
  keyPem: string;
  /**
   * Roots peers must chain to: the trust bundle's roots of this workload's own trust domain,
   * all that TLS is given. A root of another domain in the same bundle (a federated
   * partner's) must not vouch for an identity of this one, and the TLS library checks
   * chains, not trust domains.
   */
  bundlePem: string;
  /** The trust bundle as read, every domain's roots: what a reload compares against. */
  bundleText: string;
  bundle: TrustBundle;
  spiffeId: string;
  trustDomain: string;
  notAfter: Date;
  files: { chain: string; key: string; bundle: string };
}

export function resolveCertFiles(src: CertSources): { chain: string; key: string; bundle: string } {
  if (src.certsDir) {
    const p = workloadPaths(src.certsDir);
    return { chain: src.cert ?? p.chain, key: src.key ?? p.key, bundle: src.ca ?? p.bundle };
  }
  if (src.cert && src.key && src.ca) return { chain: src.cert, key: src.key, bundle: src.ca };
  throw new UsageError("give --certs-dir DIR (as written by 'mesh ca issue'), or all of --cert, --key and --ca", "--certs-dir");
}

export async function loadWorkloadCerts(src: CertSources): Promise<WorkloadCerts> {
  const files = resolveCertFiles(src);
  const chainPem = readTextFile(files.chain, "certificate chain");
  const keyPem = readTextFile(files.key, "private key");
  const bundlePem = readTextFile(files.bundle, "trust bundle");
  return workloadCertsFromPem({ chainPem, keyPem, bundlePem }, files);
}

/** Checks PEM text as a workload identity: key matches leaf, chain verifies to the bundle. */
export async function workloadCertsFromPem(
  pem: { chainPem: string; keyPem: string; bundlePem: string },
  files: { chain: string; key: string; bundle: string },
): Promise<WorkloadCerts> {
  const { chainPem, keyPem, bundlePem } = pem;
  const chain = readCertificates(chainPem, files.chain, "certificate chain");
  await assertKeyMatches(chain[0]!.spki, await importKeyText(keyPem, files.key, "private key"), files.key);
  let bundle: TrustBundle;
  try {
    bundle = TrustBundle.fromPem(bundlePem, undefined, files.bundle);
  } catch (err) {
    // Its DataErrors already name the file: wrapping them again would print the path twice.
    if (err instanceof DataError) throw err;
    throw new DataError(`trust bundle cannot be read: ${(err as Error).message}`, files.bundle);
  }
  const verdict = await verifyPeerChain(chain, bundle);
  if (!verdict.ok) throw new DataError(`own certificate does not verify against the trust bundle (${verdict.reason}): ${verdict.detail}`, files.chain);
  return {
    chainPem,
    keyPem,
    bundlePem: rootsPem(bundle, verdict.id.trustDomain),
    bundleText: bundlePem,
    bundle,
    spiffeId: verdict.spiffeId,
    trustDomain: verdict.id.trustDomain,
    notAfter: chain[0]!.notAfter,
    files,
  };
}

function rootsPem(bundle: TrustBundle, trustDomain: string): string {
  return bundle.roots(trustDomain).map((root) => encodePem("CERTIFICATE", root.der)).join("");
}

/** What a listener serves with and checks callers against. */
export function listenerTlsOf(c: WorkloadCerts): ListenerTls {
  return { cert: c.chainPem, key: c.keyPem, ca: c.bundlePem, trustDomain: c.trustDomain, notAfterMs: c.notAfter.getTime() };
}

export const defaultCertsDir = (service: string, namespace = "default") => join("certs", namespace, service);
