/**
 * Crafting certificates for tests, bypassing the CA so that every field a verifier
 * checks can be set to a wrong value on purpose. Defaults produce a valid SPIFFE
 * hierarchy (root -> intermediate -> X509-SVID leaf); each option breaks one thing.
 *
 *   const root = await makeRoot({ trustDomain: "example.org" });
 *   const int = await makeIntermediate(root);
 *   const leaf = await makeLeaf(int, { uris: ["spiffe://example.org/ns/a/sa/b"] });
 *   verifyPeerChain(chainOf(leaf, int), bundle)
 */
import { Certificate } from "../../src/pki/certificate.ts";
import { certToPem, EC_SIGN_ALG, exportPrivateKeyPem, generateKeyPair, randomSerial, x509 } from "../../src/pki/x509.ts";

export type KeyUsageName = keyof typeof x509.KeyUsageFlags;
/** "serverAuth", "clientAuth", "codeSigning", ... or a dotted OID. */
export type EkuName = keyof typeof x509.ExtendedKeyUsage | (string & {});

export interface CertOptions {
  /** Distinguished name, e.g. "CN=web". Defaults to a unique name per certificate. */
  subject?: string;
  notBefore?: Date;
  notAfter?: Date;
  /** basicConstraints cA; null leaves the extension out. */
  ca?: boolean | null;
  /** basicConstraints pathLenConstraint (only with ca: true). */
  pathLen?: number;
  /** Key usage bits; null leaves the extension out. */
  keyUsages?: KeyUsageName[] | null;
  /** Extended key usages; null (or [] ) leaves the extension out. */
  eku?: EkuName[] | null;
  /** URI SANs. No SAN extension at all when both uris and dns are empty. */
  uris?: string[];
  dns?: string[];
  /** Reuse a key pair (e.g. to re-issue the same key); a fresh P-256 pair otherwise. */
  keys?: CryptoKeyPair;
  /** Subject/authority key identifiers; default true. False makes a same-named CA indistinguishable by key id. */
  keyIds?: boolean;
  /** Extra extensions, appended as given (raw ones included). */
  extensions?: x509.Extension[];
  serial?: string;
}

export interface RootOptions extends CertOptions {
  /** Default "example.org"; sets the default URI SAN spiffe://<td>. */
  trustDomain?: string;
}

export interface Issued {
  /** As the verifier reads it. */
  cert: Certificate;
  /** As @peculiar/x509 built it (for issuing children). */
  x509: x509.X509Certificate;
  keys: CryptoKeyPair;
  /** Certificate PEM, newline-terminated. */
  pem: string;
  /** PKCS#8 private key PEM. */
  keyPem: string;
  trustDomain: string;
}

export const DEFAULT_TRUST_DOMAIN = "example.org";
export const DEFAULT_LEAF_ID = "spiffe://example.org/ns/default/sa/web";

const HOUR = 3600_000;
/** A date `ms` from now (negative: in the past). */
export function fromNow(ms: number): Date {
  return new Date(Date.now() + ms);
}

let seq = 0;
function uniqueName(kind: string, td: string): string {
  return `CN=${kind} ${++seq},O=${td}`;
}

/** A self-signed CA: cA=true, keyCertSign+cRLSign, URI SAN spiffe://<td>. */
export async function makeRoot(opts: RootOptions = {}): Promise<Issued> {
  const td = opts.trustDomain ?? DEFAULT_TRUST_DOMAIN;
  return issue(undefined, td, {
    subject: uniqueName("Test Root CA", td),
    ca: true,
    keyUsages: ["keyCertSign", "cRLSign"],
    uris: [`spiffe://${td}`],
    notBefore: fromNow(-HOUR),
    notAfter: fromNow(365 * 24 * HOUR),
    ...opts,
  });
}

/** A CA signed by `parent`, in the parent's trust domain unless told otherwise. */
export async function makeIntermediate(parent: Issued, opts: RootOptions = {}): Promise<Issued> {
  const td = opts.trustDomain ?? parent.trustDomain;
  return issue(parent, td, {
    subject: uniqueName("Test Intermediate CA", td),
    ca: true,
    keyUsages: ["keyCertSign", "cRLSign"],
    uris: [`spiffe://${td}`],
    notBefore: fromNow(-HOUR),
    notAfter: fromNow(30 * 24 * HOUR),
    ...opts,
  });
}

/**
 * An X509-SVID signed by `issuer`: cA=false, digitalSignature, serverAuth+clientAuth,
 * one URI SAN (default spiffe://<issuer's td>/ns/default/sa/web).
 */
export async function makeLeaf(issuer: Issued, opts: RootOptions = {}): Promise<Issued> {
  const td = opts.trustDomain ?? issuer.trustDomain;
  return issue(issuer, td, {
    subject: uniqueName("Test Workload", td),
    ca: false,
    keyUsages: ["digitalSignature"],
    eku: ["serverAuth", "clientAuth"],
    uris: [`spiffe://${td}/ns/default/sa/web`],
    notBefore: fromNow(-HOUR),
    notAfter: fromNow(24 * HOUR),
    ...opts,
  });
}

/** The certificates of a chain, leaf first, as verifyPeerChain takes them. */
export function chainOf(...items: Issued[]): Certificate[] {
  return items.map((i) => i.cert);
}

/** The PEM of several certificates, concatenated in order. */
export function pemOf(...items: Issued[]): string {
  return items.map((i) => i.pem).join("");
}

/** A copy of `cert` with one bit of its signature flipped: same names, broken signature. */
export function withBrokenSignature(cert: Certificate): Certificate {
  const der = cert.der.slice();
  der[der.length - 1]! ^= 0x01;
  return Certificate.fromDer(der);
}

async function issue(issuer: Issued | undefined, trustDomain: string, o: CertOptions): Promise<Issued> {
  const keys = o.keys ?? (await generateKeyPair());
  const subject = o.subject ?? uniqueName("Test", trustDomain);
  const signer = issuer?.keys ?? keys;
  const extensions: x509.Extension[] = [];
  if (o.keyIds !== false) {
    extensions.push(await x509.SubjectKeyIdentifierExtension.create(keys.publicKey));
    if (issuer) extensions.push(await x509.AuthorityKeyIdentifierExtension.create(signer.publicKey));
  }
  if (o.ca !== null && o.ca !== undefined)
    extensions.push(new x509.BasicConstraintsExtension(o.ca, o.ca ? o.pathLen : undefined, true));
  if (o.keyUsages)
    extensions.push(new x509.KeyUsagesExtension(o.keyUsages.reduce((acc, u) => acc | x509.KeyUsageFlags[u], 0), true));
  if (o.eku?.length) extensions.push(new x509.ExtendedKeyUsageExtension(o.eku.map(ekuOid), false));
  const names: x509.JsonGeneralName[] = [
    ...(o.uris ?? []).map((value) => ({ type: "url" as const, value })),
    ...(o.dns ?? []).map((value) => ({ type: "dns" as const, value })),
  ];
  // SAN must be critical when the subject is empty (RFC 5280 §4.2.1.6).
  if (names.length) extensions.push(new x509.SubjectAlternativeNameExtension(names, subject === ""));
  extensions.push(...(o.extensions ?? []));

  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: o.serial ?? randomSerial(),
    subject,
    issuer: issuer ? issuer.x509.subjectName : subject,
    notBefore: o.notBefore ?? fromNow(-HOUR),
    notAfter: o.notAfter ?? fromNow(24 * HOUR),
    publicKey: keys.publicKey,
    signingKey: signer.privateKey,
    signingAlgorithm: EC_SIGN_ALG,
    extensions,
  });
  return {
    cert: Certificate.fromDer(new Uint8Array(cert.rawData)),
    x509: cert,
    keys,
    pem: certToPem(cert),
    keyPem: await exportPrivateKeyPem(keys.privateKey),
    trustDomain,
  };
}

function ekuOid(name: EkuName): string {
  return name in x509.ExtendedKeyUsage ? x509.ExtendedKeyUsage[name as keyof typeof x509.ExtendedKeyUsage] : name;
}
