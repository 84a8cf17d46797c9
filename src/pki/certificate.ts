/**
 * An X.509 certificate read from DER for verification: the fields path validation
 * and the SPIFFE rules look at, and nothing that issuing needs (that is the CA's,
 * in x509.ts). Signatures are checked by the runtime's native crypto. Parsing is
 * strict (der.ts), and the extensions mesh acts on are decoded once, up front, so a
 * malformed one is a result (`extensionProblem`) and never a throw during a handshake.
 * Signatures are checked with WebCrypto: node:crypto would add ~6 MB to every sidecar.
 */
import {
  ascii,
  children,
  contextTag,
  DerError,
  hex,
  integerBytes,
  readBitString,
  readBoolean,
  readOid,
  readRoot,
  readSmallInt,
  readTime,
  TAG,
  type Tlv,
} from "./der.ts";
import { renderName } from "./name.ts";

export class CertificateError extends Error {
  override name = "CertificateError";
}

export const OID = {
  san: "2.5.29.17",
  keyUsage: "2.5.29.15",
  basicConstraints: "2.5.29.19",
  extKeyUsage: "2.5.29.37",
  authorityKeyId: "2.5.29.35",
  subjectKeyId: "2.5.29.14",
  anyEku: "2.5.29.37.0",
  serverAuth: "1.3.6.1.5.5.7.3.1",
  clientAuth: "1.3.6.1.5.5.7.3.2",
} as const;

/** keyUsage bits (RFC 5280 §4.2.1.3), bit 0 first. */
export const KU = {
  digitalSignature: 1,
  nonRepudiation: 2,
  keyEncipherment: 4,
  dataEncipherment: 8,
  keyAgreement: 16,
  keyCertSign: 32,
  cRLSign: 64,
  encipherOnly: 128,
  decipherOnly: 256,
} as const;

export interface Extension {
  oid: string;
  critical: boolean;
  value: Uint8Array;
}

/** The extensions mesh acts on, decoded; absent ones are undefined. */
export interface KnownExtensions {
  san?: { uris: string[]; dns: string[] };
  basicConstraints?: { ca: boolean; pathLength?: number };
  /** KU bits. */
  keyUsage?: number;
  extKeyUsage?: string[];
  /** Lowercase hex. */
  authorityKeyId?: string;
  subjectKeyId?: string;
}

type SignatureAlgorithm = { family: "ec" | "rsa" | "ed25519"; hash?: string };

/** Signature algorithms by OID: the key family they need and their digest. */
const SIGNATURE_ALGORITHMS: Record<string, SignatureAlgorithm> = {
  "1.2.840.10045.4.3.2": { family: "ec", hash: "SHA-256" }, // ecdsa-with-SHA256
  "1.2.840.10045.4.3.3": { family: "ec", hash: "SHA-384" },
  "1.2.840.10045.4.3.4": { family: "ec", hash: "SHA-512" },
  "1.2.840.113549.1.1.11": { family: "rsa", hash: "SHA-256" }, // sha256WithRSAEncryption
  "1.2.840.113549.1.1.12": { family: "rsa", hash: "SHA-384" },
  "1.2.840.113549.1.1.13": { family: "rsa", hash: "SHA-512" },
  "1.3.101.112": { family: "ed25519" },
};

/** Named curves by OID, with their coordinate size in bytes. */
const CURVES: Record<string, { name: string; size: number }> = {
  "1.2.840.10045.3.1.7": { name: "P-256", size: 32 },
  "1.3.132.0.34": { name: "P-384", size: 48 },
  "1.3.132.0.35": { name: "P-521", size: 66 },
};
const EC_PUBLIC_KEY = "1.2.840.10045.2.1";
const RSA_ENCRYPTION = "1.2.840.113549.1.1.1";
const ED25519 = "1.3.101.112";

export class Certificate {
  readonly der: Uint8Array;
  readonly tbs: Uint8Array;
  readonly signatureAlgorithm: string;
  readonly signature: Uint8Array;
  /** Lowercase hex of the serial number's DER value. */
  readonly serialNumber: string;
  readonly issuerDer: Uint8Array;
  readonly subjectDer: Uint8Array;
  /** RFC 4514-style text, for messages only: compare names by `issuerDer`/`subjectDer`. */
  readonly issuer: string;
  readonly subject: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly spki: Uint8Array;
  readonly extensions: readonly Extension[];
  /** The decoded extensions, or why they cannot be used. */
  readonly known: KnownExtensions;
  readonly extensionProblem: string | undefined;

  /** Parses DER; throws CertificateError naming what is malformed. */
  static fromDer(der: Uint8Array): Certificate {
    try {
      return new Certificate(der);
    } catch (err) {
      if (err instanceof DerError) throw new CertificateError(`malformed certificate: ${err.message}`);
      throw err;
    }
  }

  private constructor(der: Uint8Array) {
    this.der = der;
    const root = readRoot(der, TAG.sequence, "Certificate");
    const [tbs, sigAlg, sigValue, ...extra] = children(der, root);
    if (!tbs || !sigAlg || !sigValue || extra.length) throw new DerError("Certificate must have exactly three parts");
    if (tbs.tag !== TAG.sequence) throw new DerError("tbsCertificate is not a SEQUENCE");
    this.tbs = der.subarray(tbs.start, tbs.end);
    this.signatureAlgorithm = algorithmOid(der, sigAlg);
    const sig = readBitString(der, sigValue);
    if (sig.unused) throw new DerError("signature BIT STRING has unused bits");
    this.signature = sig.bytes;

    const fields = children(der, tbs);
    let i = 0;
    let version = 0;
    if (fields[i]?.tag === contextTag(0, true)) {
      const inner = children(der, fields[i++]!);
      if (inner.length !== 1) throw new DerError("version must hold one INTEGER");
      version = readSmallInt(der, inner[0]!);
      if (version > 2) throw new DerError(`unknown certificate version ${version + 1}`);
    }
    const serial = need(fields[i++], "serialNumber");
    this.serialNumber = hex(integerBytes(der, serial));
    const innerAlg = need(fields[i++], "signature");
    // RFC 5280 §4.1.1.2: the signed copy of the algorithm must match the outer one.
    if (!sameBytes(der.subarray(innerAlg.start, innerAlg.end), der.subarray(sigAlg.start, sigAlg.end)))
      throw new DerError("tbsCertificate's signature algorithm differs from the certificate's");
    const issuer = need(fields[i++], "issuer");
    const validity = need(fields[i++], "validity");
    const subject = need(fields[i++], "subject");
    const spki = need(fields[i++], "subjectPublicKeyInfo");
    for (const [tlv, what] of [[issuer, "issuer"], [validity, "validity"], [subject, "subject"], [spki, "subjectPublicKeyInfo"]] as const)
      if (tlv.tag !== TAG.sequence) throw new DerError(`${what} is not a SEQUENCE`);
    this.issuerDer = der.subarray(issuer.start, issuer.end);
    this.subjectDer = der.subarray(subject.start, subject.end);
    this.issuer = renderName(der, issuer);
    this.subject = renderName(der, subject);
    const times = children(der, validity);
    if (times.length !== 2) throw new DerError("validity must hold two times");
    this.notBefore = readTime(der, times[0]!);
    this.notAfter = readTime(der, times[1]!);
    this.spki = der.subarray(spki.start, spki.end);
    // Read now, though only signature checks use it: a malformed key must not make the rest read differently elsewhere.
    const [keyAlgorithm, keyBits, ...keyExtra] = children(der, spki);
    if (!keyAlgorithm || !keyBits || keyExtra.length) throw new DerError("subjectPublicKeyInfo must have exactly two parts");
    algorithmOid(der, keyAlgorithm);
    readBitString(der, keyBits);

    if (fields[i]?.tag === contextTag(1, false)) i++; // issuerUniqueID
    if (fields[i]?.tag === contextTag(2, false)) i++; // subjectUniqueID
    let extensions: Extension[] = [];
    if (fields[i]?.tag === contextTag(3, true)) {
      if (version !== 2) throw new DerError("extensions in a certificate that is not version 3");
      const wrapper = children(der, fields[i++]!);
      if (wrapper.length !== 1 || wrapper[0]!.tag !== TAG.sequence) throw new DerError("extensions must be one SEQUENCE");
      extensions = children(der, wrapper[0]!).map((ext) => readExtension(der, ext));
    }
    if (i !== fields.length) throw new DerError("unexpected fields after the extensions");
    this.extensions = extensions;
    const decoded = decodeKnown(extensions);
    this.known = decoded.ok ? decoded.known : {};
    this.extensionProblem = decoded.ok ? undefined : decoded.problem;
  }

  /** True when `issuer`'s key verifies this certificate's signature; false for any failure or unknown algorithm. */
  async isSignedBy(issuer: Certificate): Promise<boolean> {
    const alg = SIGNATURE_ALGORITHMS[this.signatureAlgorithm];
    if (!alg) return false;
    try {
      const key = issuerKey(issuer.spki, alg);
      if (!key) return false;
      const signature = key.curve ? ecdsaRaw(this.signature, key.curve.size) : this.signature;
      if (!signature) return false;
      const publicKey = await crypto.subtle.importKey("spki", new Uint8Array(issuer.spki), key.importAlg, false, ["verify"]);
      return await crypto.subtle.verify(verifyAlgorithm(alg), publicKey, signature as Uint8Array<ArrayBuffer>, this.tbs as Uint8Array<ArrayBuffer>);
    } catch {
      return false; // a key the runtime cannot import, or a mismatch: simply not verified
    }
  }
}

type KeyImport = { importAlg: AlgorithmIdentifier | EcKeyImportParams | RsaHashedImportParams; curve?: { name: string; size: number } };

/** How WebCrypto imports the issuer's key for this family, or undefined when the key is of another kind. */
function issuerKey(spki: Uint8Array, { family, hash }: SignatureAlgorithm): KeyImport | undefined {
  const [algorithm] = children(spki, readRoot(spki, TAG.sequence, "subjectPublicKeyInfo"));
  if (!algorithm || algorithm.tag !== TAG.sequence) return undefined;
  const [keyOid, params] = children(spki, algorithm);
  const oid = keyOid && readOid(spki, keyOid);
  if (family === "ec" && oid === EC_PUBLIC_KEY && params?.tag === TAG.oid) {
    const curve = CURVES[readOid(spki, params)];
    return curve && { importAlg: { name: "ECDSA", namedCurve: curve.name }, curve };
  }
  if (family === "rsa" && oid === RSA_ENCRYPTION) return { importAlg: { name: "RSASSA-PKCS1-v1_5", hash: hash! } };
  if (family === "ed25519" && oid === ED25519) return { importAlg: { name: "Ed25519" } };
  return undefined;
}

function verifyAlgorithm(alg: SignatureAlgorithm): AlgorithmIdentifier | EcdsaParams {
  if (alg.family === "ec") return { name: "ECDSA", hash: alg.hash! };
  return alg.family === "rsa" ? { name: "RSASSA-PKCS1-v1_5" } : { name: "Ed25519" };
}

/** ECDSA-Sig-Value (SEQUENCE { r, s }) as WebCrypto's r‖s, each padded to the curve's size. */
function ecdsaRaw(sig: Uint8Array, size: number): Uint8Array | undefined {
  const parts = children(sig, readRoot(sig, TAG.sequence, "ECDSA signature"));
  if (parts.length !== 2) return undefined;
  const out = new Uint8Array(2 * size);
  for (const [i, part] of parts.entries()) {
    let bytes = integerBytes(sig, part);
    if (bytes[0]! & 0x80) return undefined; // r and s are positive
    if (bytes.length > 1 && bytes[0] === 0) bytes = bytes.subarray(1);
    if (bytes.length > size) return undefined;
    out.set(bytes, (i + 1) * size - bytes.length);
  }
  return out;
}

function need(tlv: Tlv | undefined, what: string): Tlv {
  if (!tlv) throw new DerError(`tbsCertificate has no ${what}`);
  return tlv;
}

function algorithmOid(der: Uint8Array, tlv: Tlv): string {
  if (tlv.tag !== TAG.sequence) throw new DerError("AlgorithmIdentifier is not a SEQUENCE");
  const [oid] = children(der, tlv);
  if (!oid) throw new DerError("empty AlgorithmIdentifier");
  return readOid(der, oid);
}

function readExtension(der: Uint8Array, tlv: Tlv): Extension {
  if (tlv.tag !== TAG.sequence) throw new DerError("an extension is not a SEQUENCE");
  const parts = children(der, tlv);
  const oid = readOid(der, need(parts[0], "extension OID"));
  let critical = false;
  let at = 1;
  if (parts[at]?.tag === TAG.boolean) critical = readBoolean(der, parts[at++]!);
  const value = parts[at++];
  if (!value || value.tag !== TAG.octetString || at !== parts.length) throw new DerError(`extension ${oid} is malformed`);
  return { oid, critical, value: der.subarray(value.body, value.end) };
}

type Decoded = { ok: true; known: KnownExtensions } | { ok: false; problem: string };

function decodeKnown(extensions: readonly Extension[]): Decoded {
  const known: KnownExtensions = {};
  const seen = new Set<string>();
  for (const ext of extensions) {
    // RFC 5280 §4.2: at most one instance of each extension. Two SANs could hide a second URI.
    if (seen.has(ext.oid)) return { ok: false, problem: `it has the extension ${ext.oid} more than once` };
    seen.add(ext.oid);
    try {
      decodeOne(ext, known);
    } catch (err) {
      if (!(err instanceof DerError)) throw err;
      return { ok: false, problem: `its extension ${ext.oid} cannot be parsed (${err.message})` };
    }
  }
  return { ok: true, known };
}

function decodeOne(ext: Extension, known: KnownExtensions): void {
  const v = ext.value;
  switch (ext.oid) {
    case OID.san:
      known.san = generalNames(v, readRoot(v, TAG.sequence, "subjectAltName"));
      return;
    case OID.basicConstraints: {
      const parts = children(v, readRoot(v, TAG.sequence, "basicConstraints"));
      let at = 0;
      const ca = parts[at]?.tag === TAG.boolean ? readBoolean(v, parts[at++]!) : false;
      const pathLength = parts[at] ? readSmallInt(v, parts[at++]!) : undefined;
      if (at !== parts.length) throw new DerError("basicConstraints has extra fields");
      known.basicConstraints = pathLength === undefined ? { ca } : { ca, pathLength };
      return;
    }
    case OID.keyUsage: {
      const { bytes } = readBitString(v, readRoot(v, TAG.bitString, "keyUsage"));
      let bits = 0;
      // Bit 0 is the most significant bit of the first byte.
      for (let bit = 0; bit < Math.min(bytes.length * 8, 9); bit++) if (bytes[bit >> 3]! & (0x80 >> (bit & 7))) bits |= 1 << bit;
      known.keyUsage = bits;
      return;
    }
    case OID.extKeyUsage:
      known.extKeyUsage = children(v, readRoot(v, TAG.sequence, "extKeyUsage")).map((t) => readOid(v, t));
      return;
    case OID.subjectKeyId: {
      const id = readRoot(v, TAG.octetString, "subjectKeyIdentifier");
      known.subjectKeyId = hex(v.subarray(id.body, id.end));
      return;
    }
    case OID.authorityKeyId: {
      const parts = children(v, readRoot(v, TAG.sequence, "authorityKeyIdentifier"));
      const keyId = parts.find((p) => p.tag === contextTag(0, false));
      if (keyId) known.authorityKeyId = hex(v.subarray(keyId.body, keyId.end));
      return;
    }
  }
}

/** GeneralName kinds that are constructed: otherName, x400Address, directoryName, ediPartyName. */
const CONSTRUCTED_NAMES = new Set([0, 3, 4, 5]);

/** GeneralNames: collects URIs and DNS names; every other kind is checked for shape and skipped. */
function generalNames(v: Uint8Array, seq: Tlv): { uris: string[]; dns: string[] } {
  const uris: string[] = [];
  const dns: string[] = [];
  for (const name of children(v, seq)) {
    // Each kind has exactly one form; a constructed URI could hide a second identity from us that another verifier reads.
    const number = name.tag & 0x1f;
    if ((name.tag & 0xc0) !== 0x80 || number > 8 || Boolean(name.tag & 0x20) !== CONSTRUCTED_NAMES.has(number))
      throw new DerError(`GeneralName with tag 0x${name.tag.toString(16)}`);
    if (number === 6) uris.push(ascii(v, name));
    else if (number === 2) dns.push(ascii(v, name));
    else if (name.tag & 0x20) children(v, name); // otherName, directoryName and the like: well-formed, not read
  }
  return { uris, dns };
}

export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
