/**
 * The certificate authority: a root that signs intermediates, and an intermediate
 * that signs workload certificates (X.509-SVIDs). Loading is strict: a CA directory
 * whose files do not fit together is refused with the file named.
 */
import { existsSync } from "node:fs";
import { DataError, MeshError } from "../core/errors.ts";
import { readTextFile } from "../core/files.ts";
import { Certificate, KU, sameBytes } from "../pki/certificate.ts";
import { assertKeyMatches as assertSpkiMatches, importKeyText, readCertificates, trustDomainOfCa as trustDomainOf } from "../pki/load.ts";
import { formatSpiffeId, workloadId } from "../pki/spiffe.ts";
import {
  EC_SIGN_ALG,
  certToPem,
  generateKeyPair,
  randomSerial,
  x509,
} from "../pki/x509.ts";
import { caPaths, type CaPaths } from "./layout.ts";
import {
  CLOCK_SKEW_MS,
  INTERMEDIATE_TTL_MS,
  MAX_LEAF_TTL_MS,
  ROOT_TTL_MS,
  caExtensions,
  leafExtensions,
} from "./profiles.ts";

export interface SigningCa {
  cert: x509.X509Certificate;
  keys: CryptoKeyPair;
}

export interface LoadedCa {
  paths: CaPaths;
  trustDomain: string;
  root: x509.X509Certificate;
  intermediate: SigningCa;
  /** Every root in the trust bundle (the current one first). */
  bundle: x509.X509Certificate[];
}

export interface WorkloadRequest {
  trustDomain: string;
  namespace: string;
  service: string;
  dnsNames: string[];
  ttlMs: number;
  publicKey: CryptoKey;
}

export interface IssuedLeaf {
  cert: x509.X509Certificate;
  spiffeId: string;
  /** True when the leaf was cut short to end with its intermediate. */
  clamped: boolean;
}

const caName = (role: string, td: string) => `CN=mesh ${role} CA, O=${td}`;

/** Backdated like leaves: a leaf accepted by a lagging peer is no use if its CAs are not. */
const backdated = (now: Date) => new Date(now.getTime() - CLOCK_SKEW_MS);

export async function createRoot(trustDomain: string, now = new Date()): Promise<SigningCa> {
  const keys = await generateKeyPair();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerial(),
    name: caName("root", trustDomain),
    notBefore: backdated(now),
    notAfter: new Date(now.getTime() + ROOT_TTL_MS),
    keys,
    signingAlgorithm: EC_SIGN_ALG,
    // pathLength 1: the root may sign intermediates, which may sign only leaves.
    extensions: await caExtensions({ trustDomain, pathLength: 1, subjectKey: keys.publicKey, issuerKey: keys.publicKey }),
  });
  return { cert, keys };
}

export async function createIntermediate(root: SigningCa, trustDomain: string, now = new Date()): Promise<SigningCa> {
  const keys = await generateKeyPair();
  const notAfter = Math.min(now.getTime() + INTERMEDIATE_TTL_MS, root.cert.notAfter.getTime());
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerial(),
    subject: caName("intermediate", trustDomain),
    issuer: root.cert.subjectName,
    notBefore: backdated(now),
    notAfter: new Date(notAfter),
    publicKey: keys.publicKey,
    signingKey: root.keys.privateKey,
    signingAlgorithm: EC_SIGN_ALG,
    extensions: await caExtensions({
      trustDomain,
      pathLength: 0,
      subjectKey: keys.publicKey,
      issuerKey: root.keys.publicKey,
    }),
  });
  return { cert, keys };
}

export async function issueLeaf(ca: SigningCa, req: WorkloadRequest, now = new Date()): Promise<IssuedLeaf> {
  if (req.ttlMs <= 0) throw new DataError("TTL must be positive", "--ttl");
  if (req.ttlMs > MAX_LEAF_TTL_MS) throw new DataError(`TTL exceeds the maximum of ${MAX_LEAF_TTL_MS / 3600_000}h`, "--ttl");
  const spiffeId = formatSpiffeId(workloadId(req.trustDomain, req.namespace, req.service));
  const wanted = now.getTime() + req.ttlMs;
  const notAfter = Math.min(wanted, ca.cert.notAfter.getTime());
  if (notAfter <= now.getTime()) throw new MeshError("the signing intermediate has expired; run 'mesh ca rotate'");
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerial(),
    subject: `CN=${req.service}, OU=${req.namespace}, O=${req.trustDomain}`,
    issuer: ca.cert.subjectName,
    notBefore: backdated(now),
    notAfter: new Date(notAfter),
    publicKey: req.publicKey,
    signingKey: ca.keys.privateKey,
    signingAlgorithm: EC_SIGN_ALG,
    extensions: await leafExtensions({
      spiffeId,
      dnsNames: req.dnsNames,
      subjectKey: req.publicKey,
      issuerKey: ca.keys.publicKey,
    }),
  });
  return { cert, spiffeId, clamped: notAfter < wanted };
}

/** The trust domain a CA certificate speaks for: its one URI SAN, `spiffe://<td>`. */
export function trustDomainOfCa(cert: x509.X509Certificate, where: string): string {
  return trustDomainOf(asCertificate(cert), where);
}

function oneCert(path: string, what: string): x509.X509Certificate {
  const certs = parseCertificatesAt(path, what);
  if (certs.length !== 1) throw new DataError(`${what} must hold exactly one certificate, found ${certs.length}`, path);
  return certs[0]!;
}

export function parseCertificatesAt(path: string, what: string): x509.X509Certificate[] {
  return parseCertificatesText(readTextFile(path, what), path, what);
}

/** Parses PEM text read from `path` strictly (readCertificates), as certificates the CA can issue with. */
export function parseCertificatesText(text: string, path: string, what: string): x509.X509Certificate[] {
  return readCertificates(text, path, what).map((cert) => new x509.X509Certificate(cert.der.slice()));
}

export async function loadKeyAt(path: string, what: string): Promise<CryptoKeyPair> {
  return importKeyText(readTextFile(path, what), path, what);
}

/** Keys and certificates must belong together; a mismatch would issue unverifiable leaves. */
export async function assertKeyMatches(cert: x509.X509Certificate, keys: CryptoKeyPair, where: string): Promise<void> {
  await assertSpkiMatches(new Uint8Array(cert.publicKey.rawData), keys, where);
}

/** The verifier's view of a certificate this module issued or loaded. */
export function asCertificate(cert: x509.X509Certificate): Certificate {
  return Certificate.fromDer(new Uint8Array(cert.rawData));
}

/**
 * `replacingIntermediate`: the caller is about to replace the intermediate (a rotation),
 * so one that does not fit its root is no reason to refuse; it is how such a CA is repaired.
 */
export async function loadCa(dir: string, opts: { replacingIntermediate?: boolean } = {}): Promise<LoadedCa> {
  const paths = caPaths(dir);
  if (!existsSync(paths.intermediateCert))
    throw new DataError(`no CA here (missing ${paths.intermediateCert}); run 'mesh ca init --out ${dir}'`, "--ca-dir");
  const root = oneCert(paths.rootCert, "root certificate");
  const intermediateCert = oneCert(paths.intermediateCert, "intermediate certificate");
  const keys = await loadKeyAt(paths.intermediateKey, "intermediate key");
  await assertKeyMatches(intermediateCert, keys, paths.intermediateKey);
  const trustDomain = trustDomainOfCa(root, paths.rootCert);
  const bundle = existsSync(paths.bundle) ? parseCertificatesAt(paths.bundle, "trust bundle") : [root];
  const ca = { paths, trustDomain, root, intermediate: { cert: intermediateCert, keys }, bundle };
  if (!opts.replacingIntermediate) await assertIntermediateFits(ca);
  return ca;
}

/**
 * The intermediate must be a CA signed by root.pem or by another root of the same trust
 * domain in bundle.pem (every chain it signs is checked against those), and must not
 * claim another trust domain. A trust-domain ID on it is optional, as SPIFFE allows.
 */
async function assertIntermediateFits(ca: LoadedCa): Promise<void> {
  const where = ca.paths.intermediateCert;
  const td = ca.trustDomain;
  const intermediate = asCertificate(ca.intermediate.cert);
  if (intermediate.extensionProblem) throw new DataError(`intermediate certificate: ${intermediate.extensionProblem}`, where);
  const { basicConstraints, keyUsage = 0, san } = intermediate.known;
  if (!basicConstraints?.ca || !(keyUsage & KU.keyCertSign))
    throw new DataError("intermediate certificate is not a CA certificate (it needs basicConstraints cA=true and keyCertSign)", where);
  const claimed = san?.uris.length ? trustDomainOf(intermediate, where) : td;
  if (claimed !== td) throw new DataError(`intermediate certificate is of trust domain "${claimed}", but ${ca.paths.rootCert} is of "${td}"`, where);
  if (await signedByOneOf(intermediate, [ca.root, ...ca.bundle], td)) return;
  throw new DataError(
    `intermediate certificate was not issued by ${ca.paths.rootCert} nor by another root of "${td}" in ${ca.paths.bundle}, ` +
      `so no chain it signs would verify; run 'mesh ca rotate' to issue a new intermediate from the root`,
    where,
  );
}

/** Whether one of `roots` (of trust domain `td`) signed `cert`. */
async function signedByOneOf(cert: Certificate, roots: x509.X509Certificate[], td: string): Promise<boolean> {
  const issuers = roots.map(asCertificate).filter((root) => sameBytes(root.subjectDer, cert.issuerDer) && caDomainOf(root) === td);
  for (const root of issuers) if (await cert.isSignedBy(root)) return true;
  return false;
}

/** Whether `bundle` still holds the root the CA's intermediate was signed by: without it, no chain it signs would verify. */
export function bundleKeepsSigner(ca: LoadedCa, bundle: x509.X509Certificate[]): Promise<boolean> {
  return signedByOneOf(asCertificate(ca.intermediate.cert), bundle, ca.trustDomain);
}

/** A root's trust domain, or undefined for one without a SPIFFE trust-domain ID (it then vouches for no domain here). */
function caDomainOf(cert: Certificate): string | undefined {
  try {
    return trustDomainOf(cert, "");
  } catch {
    return undefined;
  }
}

export async function loadRootSigner(paths: CaPaths): Promise<SigningCa> {
  const cert = oneCert(paths.rootCert, "root certificate");
  const keys = await loadKeyAt(paths.rootKey, "root key");
  await assertKeyMatches(cert, keys, paths.rootKey);
  return { cert, keys };
}

export function bundlePem(certs: x509.X509Certificate[]): string {
  return certs.map(certToPem).join("");
}
