/**
 * The certificate authority: a root that signs intermediates, and an intermediate
 * that signs workload certificates (X.509-SVIDs). Loading is strict: a CA directory
 * whose files do not fit together is refused with the file named.
 */
import { existsSync } from "node:fs";
import { DataError, MeshError } from "../core/errors.ts";
import { readTextFile } from "../core/files.ts";
import { Certificate } from "../pki/certificate.ts";
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

export async function createRoot(trustDomain: string, now = new Date()): Promise<SigningCa> {
  const keys = await generateKeyPair();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerial(),
    name: caName("root", trustDomain),
    notBefore: now,
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
    notBefore: now,
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
    notBefore: new Date(now.getTime() - CLOCK_SKEW_MS),
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

export async function loadCa(dir: string): Promise<LoadedCa> {
  const paths = caPaths(dir);
  if (!existsSync(paths.intermediateCert))
    throw new DataError(`no CA here (missing ${paths.intermediateCert}); run 'mesh ca init --out ${dir}'`, "--ca-dir");
  const root = oneCert(paths.rootCert, "root certificate");
  const intermediateCert = oneCert(paths.intermediateCert, "intermediate certificate");
  const keys = await loadKeyAt(paths.intermediateKey, "intermediate key");
  await assertKeyMatches(intermediateCert, keys, paths.intermediateKey);
  const trustDomain = trustDomainOfCa(root, paths.rootCert);
  const bundle = existsSync(paths.bundle) ? parseCertificatesAt(paths.bundle, "trust bundle") : [root];
  return { paths, trustDomain, root, intermediate: { cert: intermediateCert, keys }, bundle };
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
