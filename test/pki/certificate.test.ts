/**
 * Certificate.fromDer (src/pki/certificate.ts) replaces @peculiar/x509 for reading
 * peer certificates, so it is checked three ways:
 *  - differentially: certificates built with @peculiar/x509 in many shapes must read
 *    the same through both parsers;
 *  - against hand-broken certificates, which must be refused or flagged;
 *  - by seeded mutation fuzzing: no input may escape as anything but a
 *    CertificateError, and where both parsers accept an input they must agree on the
 *    fields verification acts on (URI SANs, basicConstraints.cA) and the other decoded ones.
 * Differences from @peculiar/x509 are written down where they are tested.
 */
import { beforeAll, describe, expect, test } from "bun:test";
import { Certificate, CertificateError, KU, OID } from "../../src/pki/certificate.ts";
import { children, contextTag, readRoot, TAG } from "../../src/pki/der.ts";
import { EC_SIGN_ALG, generateKeyPair, x509 } from "../../src/pki/x509.ts";
import { seeded } from "../helpers/prng.ts";

type Random = () => number;

// ---------------------------------------------------------------------------------
// DER building blocks for re-encoding certificates by hand.

function concat(...parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** tag + minimal DER length + the parts. */
function tlv(tag: number, ...parts: (Uint8Array | readonly number[])[]): Uint8Array<ArrayBuffer> {
  const body = concat(...parts.map((p) => (p instanceof Uint8Array ? p : new Uint8Array(p))));
  const n = body.length;
  const len = n < 0x80 ? [n] : n < 0x100 ? [0x81, n] : n < 0x10000 ? [0x82, n >> 8, n & 0xff] : [0x83, n >> 16, (n >> 8) & 0xff, n & 0xff];
  return concat(new Uint8Array([tag, ...len]), body);
}

const ascii = (s: string): number[] => [...new TextEncoder().encode(s)];
const toHex = (b: Uint8Array | ArrayBuffer): string => Buffer.from(b instanceof Uint8Array ? b : new Uint8Array(b)).toString("hex");
const derOf = (cert: x509.X509Certificate): Uint8Array<ArrayBuffer> => new Uint8Array(cert.rawData);

/** The three parts of a Certificate and the fields of its TBSCertificate, as encoded elements. */
interface Parts {
  fields: Uint8Array[];
  sigAlg: Uint8Array;
  sigValue: Uint8Array;
}

function split(der: Uint8Array): Parts {
  const [tbs, sigAlg, sigValue] = children(der, readRoot(der, TAG.sequence, "test certificate"));
  if (!tbs || !sigAlg || !sigValue) throw new Error("not a certificate");
  const slice = (t: { start: number; end: number }) => der.slice(t.start, t.end);
  return { fields: children(der, tbs).map(slice), sigAlg: slice(sigAlg), sigValue: slice(sigValue) };
}

function join({ fields, sigAlg, sigValue }: Parts): Uint8Array<ArrayBuffer> {
  return tlv(TAG.sequence, tlv(TAG.sequence, ...fields), sigAlg, sigValue);
}

/** Re-encodes `der` with its TBS fields edited (the signature no longer verifies). */
function editFields(der: Uint8Array, edit: (fields: Uint8Array[]) => Uint8Array[]): Uint8Array<ArrayBuffer> {
  const parts = split(der);
  return join({ ...parts, fields: edit([...parts.fields]) });
}

/** A certificate's [3] extensions field: an Extension element per entry. */
function extensionsField(...exts: Uint8Array[]): Uint8Array {
  return tlv(contextTag(3, true), tlv(TAG.sequence, ...exts));
}

function extension(oidContent: readonly number[], critical: boolean | Uint8Array, value: Uint8Array | readonly number[]): Uint8Array {
  const crit = critical instanceof Uint8Array ? [critical] : critical ? [tlv(TAG.boolean, [0xff])] : [];
  return tlv(TAG.sequence, tlv(TAG.oid, oidContent), ...crit, tlv(TAG.octetString, value));
}

const OID_BYTES = {
  basicConstraints: [0x55, 0x1d, 0x13],
  unknown: [0x2a, 0x03, 0x04, 0x05],
  ecdsaWithSha256: [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02],
  ecdsaWithSha384: [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03],
} as const;

// ---------------------------------------------------------------------------------
// Certificates built with @peculiar/x509, the way test/helpers/certs.ts builds them.

interface Spec {
  subject: string | x509.JsonNameParams;
  /** Expected to render exactly as @peculiar/x509 renders it. */
  sameText: boolean;
  /** mesh's rendering, when it differs from @peculiar/x509's. */
  text?: string;
  /** Substrings both renderings must contain when they differ. */
  parts?: string[];
  serial: string;
  notBefore: Date;
  notAfter: Date;
  selfSigned: boolean;
  /** Builds the extensions once keys exist. */
  extensions: (subject: CryptoKeyPair, signer: CryptoKeyPair) => Promise<x509.Extension[]>;
  label: string;
}

let rootKeys: CryptoKeyPair;
let otherKeys: CryptoKeyPair;
let subjectKeys: CryptoKeyPair[];
let root: x509.X509Certificate;
const ROOT_NAME = "CN=Differential Root, O=example.org";

beforeAll(async () => {
  rootKeys = await generateKeyPair();
  otherKeys = await generateKeyPair();
  subjectKeys = await Promise.all([1, 2, 3, 4].map(() => generateKeyPair()));
  root = await make({
    subject: ROOT_NAME,
    issuer: ROOT_NAME,
    keys: rootKeys,
    signer: rootKeys,
    extensions: [
      new x509.BasicConstraintsExtension(true, 1, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(rootKeys.publicKey),
    ],
  });
});

async function make(o: {
  subject: string | x509.Name;
  issuer: string | x509.Name;
  keys: CryptoKeyPair;
  signer: CryptoKeyPair;
  extensions?: x509.Extension[];
  serial?: string;
  notBefore?: Date;
  notAfter?: Date;
}): Promise<x509.X509Certificate> {
  return x509.X509CertificateGenerator.create({
    serialNumber: o.serial ?? "01",
    subject: o.subject,
    issuer: o.issuer,
    notBefore: o.notBefore ?? new Date("2024-01-01T00:00:00Z"),
    notAfter: o.notAfter ?? new Date("2034-01-01T00:00:00Z"),
    publicKey: o.keys.publicKey,
    signingKey: o.signer.privateKey,
    signingAlgorithm: EC_SIGN_ALG,
    extensions: o.extensions ?? [],
  });
}

/** A leaf under `root` with the given extensions (and nothing else). */
async function leafWith(extensions: x509.Extension[], subject: string | x509.Name = "CN=hostile"): Promise<Uint8Array<ArrayBuffer>> {
  const keys = subjectKeys[0]!;
  return derOf(await make({ subject, issuer: root.subjectName, keys, signer: rootKeys, extensions }));
}

const rawExt = (oid: string, critical: boolean, value: readonly number[] | Uint8Array): x509.Extension =>
  new x509.Extension(oid, critical, new Uint8Array(value));

/** Names whose text both libraries render alike, then the ones where they differ on purpose. */
const NAMES: { subject: string | x509.JsonNameParams; sameText: boolean; text?: string; parts?: string[] }[] = [
  { subject: "CN=web 1, O=example.org", sameText: true },
  { subject: "CN=payments, OU=team a, O=Example Org, L=Paris, ST=IDF, C=FR", sameText: true },
  { subject: "DC=org, DC=example, CN=svc", sameText: true }, // DC is an IA5String
  { subject: "E=ops@example.org, CN=mail", sameText: true },
  { subject: "CN=", sameText: true },
  { subject: "", sameText: true }, // an empty name: SEQUENCE {}
  { subject: [{ CN: ["multi"], O: ["valued"], OU: ["rdn"] }], sameText: true },
  { subject: "1.2.3.4=x, CN=unknown attribute", sameText: true },
  { subject: [{ CN: [{ utf8String: 'comma, plus+ quote" back\\slash <lt> >gt ;semi' }] }], sameText: true },
  { subject: [{ CN: [{ utf8String: "#hash" }] }, { O: [{ utf8String: " leading and trailing " }] }], sameText: true },
  { subject: [{ CN: ["ünïcødé 名前 🚀"] }, { O: ["x"] }], sameText: true },
  { subject: [{ CN: [{ bmpString: "bmp ü" }] }], sameText: true },
  { subject: [{ CN: [{ ia5String: "ia5" }] }, { C: [{ printableString: "FR" }] }], sameText: true },
  // Differences, all in message text only (names are compared as DER bytes):
  // mesh escapes '=' (RFC 4514 allows it); @peculiar/x509 does not.
  { subject: [{ CN: [{ utf8String: "a=b" }] }], sameText: false, text: "CN=a\\=b", parts: ["CN=a", "b"] },
  // mesh escapes every control character as \hh; @peculiar/x509 only the first \r, \n or \t.
  { subject: [{ CN: [{ utf8String: "line\nbreak\ttab\r" }] }], sameText: false, text: "CN=line\\0abreak\\09tab\\0d", parts: ["CN=line\\0", "break"] },
  // ... and C1 controls and bidirectional overrides as their UTF-8 bytes, which @peculiar/x509 leaves as they are.
  { subject: [{ CN: [{ utf8String: "csi\u009b2J evil\u202Egnp.exe" }] }], sameText: false, text: "CN=csi\\c2\\9b2J evil\\e2\\80\\aegnp.exe", parts: ["CN=csi", "2J evil"] },
  // mesh names serialNumber; @peculiar/x509 shows its OID.
  { subject: [{ "2.5.4.5": ["12345"] }, { CN: ["sn"] }], sameText: false, text: "serialNumber=12345, CN=sn", parts: ["=12345", "CN=sn"] },
  // mesh shows a UniversalString as #hex; @peculiar/x509 decodes it.
  { subject: [{ CN: [{ universalString: "univ" }] }, { O: ["u"] }], sameText: false, text: "CN=#1c10000000750000006e0000006900000076, O=u", parts: ["CN=", "O=u"] },
  // A lone space: mesh "\ ", @peculiar/x509 "\\ " (it escapes the leading space, then the trailing one again).
  { subject: [{ CN: [{ utf8String: " " }] }, { O: ["s"] }], sameText: false, text: "CN=\\ , O=s", parts: ["CN=\\", "O=s"] },
];

const SERIALS = [
  "01",
  "7f",
  "80", // high bit: DER needs a leading 00
  "ff",
  "00000042", // leading zeros are dropped by the generator
  "0100",
  "8000000000000000000000000000000000000000", // 20 bytes, high bit: 21 bytes in DER
  "7fffffffffffffffffffffffffffffffffffffff",
];

const VALIDITY: [string, string][] = [
  ["1950-01-01T00:00:00Z", "2049-12-31T23:59:59Z"], // the UTCTime range's ends
  ["1969-07-20T20:17:40Z", "1999-12-31T23:59:59Z"],
  ["2000-02-29T12:34:56Z", "2050-01-01T00:00:00Z"], // notAfter is the first GeneralizedTime
  ["2024-06-15T08:00:00Z", "9999-12-31T23:59:59Z"],
  ["2051-03-01T00:00:00Z", "2100-02-28T23:59:59Z"], // both GeneralizedTime
];

const EKUS = [
  "1.3.6.1.5.5.7.3.1",
  "1.3.6.1.5.5.7.3.2",
  "1.3.6.1.5.5.7.3.3",
  "1.3.6.1.5.5.7.3.4",
  "1.3.6.1.5.5.7.3.8",
  "1.3.6.1.5.5.7.3.9",
  "2.5.29.37.0",
  "1.3.6.1.4.1.311.10.3.4",
  "2.999.1",
];

/** GeneralNames of every kind @peculiar/x509 builds. */
const SAN_KINDS: ((i: number) => x509.JsonGeneralName)[] = [
  (i) => ({ type: "url", value: `spiffe://example.org/ns/n${i}/sa/s${i}` }),
  (i) => ({ type: "url", value: `https://h${i}.example.org:8443/p?q=${i}#f` }),
  (i) => ({ type: "dns", value: `svc-${i}.example.org` }),
  (i) => ({ type: "dns", value: `*.w${i}.example.org` }),
  (i) => ({ type: "ip", value: `10.0.${i % 256}.1` }),
  () => ({ type: "ip", value: "2001:db8::1" }),
  (i) => ({ type: "email", value: `u${i}@example.org` }),
  (i) => ({ type: "upn", value: `user${i}@corp.example` }),
  () => ({ type: "guid", value: "12345678-1234-1234-1234-123456789abc" }),
  (i) => ({ type: "dn", value: `CN=dir ${i}, O=example.org` }),
  () => ({ type: "id", value: "1.2.3.4.5" }),
];

/** GeneralNames { otherName { 1.2.3.4, [0] UTF8String "x" }, URIs... }: an otherName type @peculiar/x509 cannot build. */
function sanWithOtherName(critical: boolean, ...uris: string[]): x509.Extension {
  const body: number[] = [0xa0, 0x0a, 0x06, 0x03, 0x2a, 0x03, 0x04, 0xa0, 0x03, 0x0c, 0x01, 0x78];
  const out = tlv(TAG.sequence, body, ...uris.map((u) => tlv(contextTag(6, false), ascii(u))));
  return rawExt(OID.san, critical, out);
}

const pick = <T>(rnd: Random, items: readonly T[]): T => items[Math.floor(rnd() * items.length)]!;
const chance = (rnd: Random, p: number): boolean => rnd() < p;

function shuffle<T>(rnd: Random, items: T[]): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [items[i], items[j]] = [items[j]!, items[i]!];
  }
  return items;
}

function randomHex(rnd: Random, bytes: number): string {
  let s = "";
  for (let i = 0; i < bytes; i++) s += Math.floor(rnd() * 256).toString(16).padStart(2, "0");
  return s;
}

/** Deterministic variety: every name, serial and validity pair, with random extension sets. */
function specs(count: number): Spec[] {
  const rnd = seeded(0x5eed_c3a7);
  const out: Spec[] = [];
  for (let i = 0; i < count; i++) {
    const name = NAMES[i % NAMES.length]!;
    const serial = i < SERIALS.length ? SERIALS[i]! : randomHex(rnd, 1 + Math.floor(rnd() * 20));
    const [nb, na] = VALIDITY[i % VALIDITY.length]!;
    const extensions = async (subject: CryptoKeyPair, signer: CryptoKeyPair): Promise<x509.Extension[]> => {
      const r = seeded(1000 + i); // the same extensions each time it is called
      const exts: x509.Extension[] = [];
      if (chance(r, 0.7)) {
        exts.push(
          chance(r, 0.7)
            ? await x509.SubjectKeyIdentifierExtension.create(subject.publicKey, chance(r, 0.1))
            : new x509.SubjectKeyIdentifierExtension(randomHex(r, 1 + Math.floor(r() * 32))),
        );
      }
      if (chance(r, 0.7)) {
        const form = r();
        exts.push(
          form < 0.6
            ? await x509.AuthorityKeyIdentifierExtension.create(signer.publicKey)
            : form < 0.85
              ? new x509.AuthorityKeyIdentifierExtension(randomHex(r, 20), chance(r, 0.5))
              : // issuer name and serial, no keyIdentifier
                new x509.AuthorityKeyIdentifierExtension({ name: new x509.GeneralNames([{ type: "dn", value: ROOT_NAME }]), serialNumber: "0a" }),
        );
      }
      if (chance(r, 0.8)) {
        const ca = chance(r, 0.5);
        const pathLen = ca && chance(r, 0.6) ? pick(r, [0, 1, 3, 127, 128, 200, 65536]) : undefined;
        exts.push(new x509.BasicConstraintsExtension(ca, pathLen, chance(r, 0.6)));
      }
      if (chance(r, 0.8)) {
        // Any of the nine bits, decipherOnly (bit 8, in a second byte) included.
        const bits = chance(r, 0.3) ? pick(r, [KU.decipherOnly, KU.decipherOnly | KU.digitalSignature, 0x1ff, KU.encipherOnly]) : 1 + Math.floor(r() * 0x1ff);
        exts.push(new x509.KeyUsagesExtension(bits, chance(r, 0.7)));
      }
      if (chance(r, 0.6)) {
        const usages = shuffle(r, [...EKUS]).slice(0, 1 + Math.floor(r() * 4));
        exts.push(new x509.ExtendedKeyUsageExtension(usages, chance(r, 0.2)));
      }
      if (chance(r, 0.85)) {
        const critical = chance(r, 0.3);
        if (chance(r, 0.2)) exts.push(sanWithOtherName(critical, `spiffe://example.org/o${i}`, `urn:x:${i}`));
        else {
          const names = Array.from({ length: 1 + Math.floor(r() * 6) }, (_, k) => pick(r, SAN_KINDS)(i * 10 + k));
          exts.push(new x509.SubjectAlternativeNameExtension(names, critical));
        }
      }
      if (chance(r, 0.4)) exts.push(rawExt("1.3.6.1.4.1.55555.1." + i, chance(r, 0.5), chance(r, 0.5) ? [0x05, 0x00] : [0x04, 0x02, 0xca, 0xfe]));
      return shuffle(r, exts);
    };
    out.push({
      ...name,
      serial,
      notBefore: new Date(nb),
      notAfter: new Date(na),
      selfSigned: i % 5 === 4,
      extensions,
      label: `serial ${serial.slice(0, 10)}, ${nb.slice(0, 4)}–${na.slice(0, 4)}, ${typeof name.subject === "string" ? JSON.stringify(name.subject) : "JSON name"}`,
    });
  }
  return out;
}

/** The serial's DER value as the generator writes it: leading zeros dropped, 00 added before a high bit. */
function derSerial(input: string): string {
  let s = input.replace(/^(00)+(?=..)/, "");
  if (parseInt(s.slice(0, 2), 16) >= 0x80) s = "00" + s;
  return s;
}

function peculiarSanNames(cert: x509.X509Certificate, type: "url" | "dns"): string[] {
  const san = cert.getExtension(x509.SubjectAlternativeNameExtension);
  return san ? san.names.items.filter((n) => n.type === type).map((n) => n.value) : [];
}

/** Every field the two parsers share must agree. */
function expectAgreement(cert: x509.X509Certificate, spec: Pick<Spec, "sameText" | "text" | "parts">): Certificate {
  const ours = Certificate.fromDer(derOf(cert));
  expect(ours.extensionProblem).toBeUndefined();

  // serialNumber: mesh keeps the DER value as is, so a serial with its high bit set keeps
  // the 00 that makes it positive; @peculiar/x509 strips that one byte.
  expect(ours.serialNumber).toMatch(/^[0-9a-f]+$/);
  expect(ours.serialNumber.replace(/^00(?=[89a-f])/, "")).toBe(cert.serialNumber.toLowerCase());

  expect(ours.notBefore.getTime()).toBe(cert.notBefore.getTime());
  expect(ours.notAfter.getTime()).toBe(cert.notAfter.getTime());

  expect(toHex(ours.subjectDer)).toBe(toHex(cert.subjectName.toArrayBuffer()));
  expect(toHex(ours.issuerDer)).toBe(toHex(cert.issuerName.toArrayBuffer()));
  if (spec.sameText) {
    expect(ours.subject).toBe(cert.subject);
  } else {
    expect(ours.subject).toBe(spec.text!);
    expect(ours.subject).not.toBe(cert.subject); // if they now agree, move the name up to the sameText ones
    for (const part of spec.parts ?? []) {
      expect(ours.subject).toContain(part);
      expect(cert.subject).toContain(part);
    }
  }
  if (toHex(ours.issuerDer) === toHex(ours.subjectDer)) expect(ours.issuer).toBe(ours.subject);
  else expect({ ours: ours.issuer, peculiar: cert.issuer }).toEqual({ ours: ROOT_NAME, peculiar: ROOT_NAME });
  expect(toHex(ours.spki)).toBe(toHex(cert.publicKey.rawData));

  expect(ours.extensions.map((e) => [e.oid, e.critical, toHex(e.value)])).toEqual(
    cert.extensions.map((e) => [e.type, e.critical, toHex(e.value)]),
  );

  const san = cert.getExtension(x509.SubjectAlternativeNameExtension);
  if (san) expect(ours.known.san).toEqual({ uris: peculiarSanNames(cert, "url"), dns: peculiarSanNames(cert, "dns") });
  else expect(ours.known.san).toBeUndefined();

  const bc = cert.getExtension(x509.BasicConstraintsExtension);
  if (bc) {
    expect(ours.known.basicConstraints?.ca).toBe(bc.ca);
    expect(ours.known.basicConstraints?.pathLength).toBe(bc.pathLength);
  } else expect(ours.known.basicConstraints).toBeUndefined();

  const ku = cert.getExtension(x509.KeyUsagesExtension);
  expect(ours.known.keyUsage).toBe(ku ? ku.usages : undefined);

  const eku = cert.getExtension(x509.ExtendedKeyUsageExtension);
  expect(ours.known.extKeyUsage).toEqual(eku ? eku.usages.map(String) : undefined);

  const ski = cert.getExtension(x509.SubjectKeyIdentifierExtension);
  expect(ours.known.subjectKeyId).toBe(ski ? ski.keyId.toLowerCase() : undefined);
  const aki = cert.getExtension(x509.AuthorityKeyIdentifierExtension);
  expect(ours.known.authorityKeyId).toBe(aki?.keyId ? aki.keyId.toLowerCase() : undefined);
  return ours;
}

describe("agrees with @peculiar/x509 on certificates it builds", () => {
  const all = specs(2 * NAMES.length + 4);
  all.forEach((spec, i) => {
    test(`#${i}: ${spec.label}`, async () => {
      const keys = subjectKeys[i % subjectKeys.length]!;
      const signer = spec.selfSigned ? keys : rootKeys;
      const subject = typeof spec.subject === "string" ? spec.subject : new x509.Name(spec.subject);
      const cert = await make({
        subject,
        issuer: spec.selfSigned ? subject : root.subjectName,
        keys,
        signer,
        serial: spec.serial,
        notBefore: spec.notBefore,
        notAfter: spec.notAfter,
        extensions: await spec.extensions(keys, signer),
      });
      const ours = expectAgreement(cert, spec);
      expect(ours.serialNumber).toBe(derSerial(spec.serial));
      expect(ours.notBefore.toISOString()).toBe(spec.notBefore.toISOString());
      expect(ours.notAfter.toISOString()).toBe(spec.notAfter.toISOString());
      // Dates from 2050 on are GeneralizedTime, earlier ones UTCTime (RFC 5280 §4.1.2.5).
      const der = Buffer.from(derOf(cert));
      const encoded = (d: Date) => d.toISOString().replace(/[-:T]|\.000/g, "");
      for (const d of [spec.notBefore, spec.notAfter]) {
        const asTime = d.getUTCFullYear() >= 2050 ? [TAG.generalizedTime, 15, ...ascii(encoded(d))] : [TAG.utcTime, 13, ...ascii(encoded(d).slice(2))];
        expect(der.includes(Buffer.from(asTime))).toBe(true);
      }
      // The signature: by its issuer, and by nothing else.
      const issuerCert = spec.selfSigned ? ours : Certificate.fromDer(derOf(root));
      expect(await ours.isSignedBy(issuerCert)).toBe(true);
      expect(await cert.verify({ publicKey: spec.selfSigned ? keys.publicKey : rootKeys.publicKey, signatureOnly: true })).toBe(true);
      expect(await ours.isSignedBy(spec.selfSigned ? Certificate.fromDer(derOf(root)) : ours)).toBe(false);
    });
  });

  test("the variety covers what it claims to", async () => {
    // The extension mix is random: make sure the seed still reaches every kind and shape.
    const seen = new Set<string>();
    for (const [i, spec] of all.entries()) {
      const keys = subjectKeys[i % subjectKeys.length]!;
      for (const e of await spec.extensions(keys, spec.selfSigned ? keys : rootKeys)) {
        seen.add(`${e.type}:${e.critical}`);
        if (e instanceof x509.BasicConstraintsExtension) seen.add(`bc:${e.ca}:${e.pathLength !== undefined}`);
        if (e instanceof x509.KeyUsagesExtension && e.usages & KU.decipherOnly) seen.add("ku:decipherOnly");
        if (e instanceof x509.SubjectAlternativeNameExtension) for (const n of e.names.items) seen.add(`san:${n.type}`);
        if (e instanceof x509.AuthorityKeyIdentifierExtension && !e.keyId) seen.add("aki:certId");
        if (e.type.startsWith("1.3.6.1.4.1.55555.")) seen.add(`unknown:${e.critical}`);
      }
    }
    for (const want of [
      `${OID.san}:true`,
      `${OID.san}:false`,
      `${OID.basicConstraints}:true`,
      `${OID.basicConstraints}:false`,
      `${OID.keyUsage}:true`,
      `${OID.keyUsage}:false`,
      `${OID.extKeyUsage}:false`,
      `${OID.subjectKeyId}:false`,
      `${OID.authorityKeyId}:false`,
      "bc:true:true",
      "bc:true:false",
      "bc:false:false",
      "ku:decipherOnly",
      "san:url",
      "san:dns",
      "san:ip",
      "san:email",
      "san:upn",
      "san:guid",
      "san:dn",
      "san:id",
      "aki:certId",
      "unknown:true",
      "unknown:false",
    ])
      expect(seen).toContain(want);
  });

  test("a keyUsage with no bits set: mesh reads 0, @peculiar/x509 reads NaN", async () => {
    const cert = new x509.X509Certificate(await leafWith([new x509.KeyUsagesExtension(0 as x509.KeyUsageFlags, true)]));
    expect(Certificate.fromDer(derOf(cert)).known.keyUsage).toBe(0);
    expect(cert.getExtension(x509.KeyUsagesExtension)?.usages).toBeNaN();
  });

  // Finding, message text only: escape() in src/pki/name.ts skips the trailing-space escape
  // when the text already ends in "\ ", but that backslash may be an escaped one. The
  // value `a\ ` renders as `CN=a\\ ` (an escaped backslash, then a bare trailing space,
  // which RFC 4514 readers drop); @peculiar/x509 writes `CN=a\\\ `.
  test("a value ending in a backslash and a space keeps its trailing space escaped", async () => {
    const cert = new x509.X509Certificate(await leafWith([], new x509.Name([{ CN: [{ utf8String: "a\\ " }] }])));
    expect(cert.subject).toBe("CN=a\\\\\\ ");
    expect(Certificate.fromDer(derOf(cert)).subject).toBe(cert.subject);
  });

  test("the project's own profiles (makeLeaf-like extensions) read the same", async () => {
    const keys = subjectKeys[1]!;
    const cert = await make({
      subject: "CN=Test Workload 1, O=example.org",
      issuer: root.subjectName,
      keys,
      signer: rootKeys,
      serial: "1f2e3d4c5b6a79880123456789abcdef",
      extensions: [
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
        await x509.AuthorityKeyIdentifierExtension.create(rootKeys.publicKey),
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth], false),
        new x509.SubjectAlternativeNameExtension([{ type: "url", value: "spiffe://example.org/ns/default/sa/web" }, { type: "dns", value: "web.example.org" }], false),
      ],
    });
    const ours = expectAgreement(cert, { sameText: true });
    expect(ours.known).toEqual({
      subjectKeyId: expect.stringMatching(/^[0-9a-f]{40}$/),
      authorityKeyId: Certificate.fromDer(derOf(root)).known.subjectKeyId,
      basicConstraints: { ca: false },
      keyUsage: KU.digitalSignature,
      extKeyUsage: [OID.serverAuth, OID.clientAuth],
      san: { uris: ["spiffe://example.org/ns/default/sa/web"], dns: ["web.example.org"] },
    });
    expect(ours.signatureAlgorithm).toBe("1.2.840.10045.4.3.2");
  });
});

describe("isSignedBy", () => {
  let leafDer: Uint8Array;
  let rootCert: Certificate;
  beforeAll(async () => {
    leafDer = await leafWith([new x509.SubjectAlternativeNameExtension([{ type: "url", value: "spiffe://example.org/sig" }])], "CN=signed leaf");
    rootCert = Certificate.fromDer(derOf(root));
  });

  test("true for the real issuer (and the self-signed root for itself), false for another key", async () => {
    const leaf = Certificate.fromDer(leafDer);
    expect(await leaf.isSignedBy(rootCert)).toBe(true);
    expect(await rootCert.isSignedBy(rootCert)).toBe(true);
    expect(await leaf.isSignedBy(leaf)).toBe(false);
    const impostor = Certificate.fromDer(derOf(await make({ subject: ROOT_NAME, issuer: ROOT_NAME, keys: otherKeys, signer: otherKeys })));
    expect(await leaf.isSignedBy(impostor)).toBe(false);
  });

  test("false after one byte of the signature is flipped", async () => {
    const { sigValue } = split(leafDer);
    // The signature BIT STRING wraps an ECDSA-Sig-Value SEQUENCE { r, s }: flip a byte of r, then of s.
    for (const offsetFromEnd of [3, sigValue.length - 10]) {
      const bad = leafDer.slice();
      bad[bad.length - offsetFromEnd]! ^= 0x01;
      const cert = Certificate.fromDer(bad);
      expect(await cert.isSignedBy(rootCert)).toBe(false);
    }
  });

  test("false after one byte of the TBS is flipped (the subject's CN)", async () => {
    const at = Buffer.from(leafDer).indexOf(Buffer.from("signed leaf"));
    expect(at).toBeGreaterThan(0);
    const bad = leafDer.slice();
    bad[at]! ^= 0x20; // "signed" → "Signed"
    const cert = Certificate.fromDer(bad);
    expect(cert.subject).toBe("CN=Signed leaf");
    expect(await cert.isSignedBy(rootCert)).toBe(false);
  });

  test("false for a signature algorithm it does not know, and for an issuer key that does not load", async () => {
    // The same certificate, both algorithm identifiers changed to ecdsa-with-SHA3-256 (2.16.840.1.101.3.4.3.10).
    const sha3 = tlv(TAG.sequence, tlv(TAG.oid, [0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x03, 0x0a]));
    const parts = split(leafDer);
    const fields = [...parts.fields];
    fields[2] = sha3;
    const odd = Certificate.fromDer(join({ fields, sigAlg: sha3, sigValue: parts.sigValue }));
    expect(odd.signatureAlgorithm).toBe("2.16.840.1.101.3.4.3.10");
    expect(await odd.isSignedBy(rootCert)).toBe(false);
    // An issuer whose key is of an unknown algorithm: well-formed, but it cannot be imported, so isSignedBy says false.
    const unknownKey = tlv(TAG.sequence, tlv(TAG.sequence, tlv(TAG.oid, [0x2a, 0x03, 0x04])), tlv(TAG.bitString, [0, 1, 2, 3]));
    const oddIssuer = Certificate.fromDer(editFields(derOf(root), (f) => f.map((x, i) => (i === 6 ? unknownKey : x))));
    expect(await Certificate.fromDer(leafDer).isSignedBy(oddIssuer)).toBe(false);
    // A subjectPublicKeyInfo that is not one is refused when read, not when first used.
    expect(() => Certificate.fromDer(editFields(derOf(root), (f) => f.map((x, i) => (i === 6 ? tlv(TAG.sequence, tlv(TAG.null)) : x))))).toThrow(CertificateError);
  });

  /** The leaf with its ECDSA-Sig-Value replaced by `sig` (a whole encoded element, or any bytes). */
  function withSignature(sig: Uint8Array): Certificate {
    return Certificate.fromDer(join({ ...split(leafDer), sigValue: tlv(TAG.bitString, [0], sig) }));
  }

  function rs(): { r: Uint8Array; s: Uint8Array } {
    const sig = Certificate.fromDer(leafDer).signature;
    const [r, s] = children(sig, readRoot(sig, TAG.sequence, "sig"));
    return { r: sig.slice(r!.body, r!.end), s: sig.slice(s!.body, s!.end) };
  }

  test("the ECDSA-Sig-Value must be strict DER: re-encodings of the same r and s are refused", async () => {
    const { r, s } = rs();
    // Control: the same r and s, re-encoded minimally, still verify.
    expect(await withSignature(tlv(TAG.sequence, tlv(TAG.integer, r), tlv(TAG.integer, s))).isSignedBy(rootCert)).toBe(true);
    // r with a redundant leading zero (the same number): refused, not normalised.
    const padded = (x: Uint8Array) => tlv(TAG.integer, [0], x);
    expect(await withSignature(tlv(TAG.sequence, padded(r), tlv(TAG.integer, s))).isSignedBy(rootCert)).toBe(false);
    expect(await withSignature(tlv(TAG.sequence, tlv(TAG.integer, r), padded(s))).isSignedBy(rootCert)).toBe(false);
    // Trailing bytes after the SEQUENCE, a third INTEGER, r and s swapped, r negative, r too long.
    expect(await withSignature(concat(tlv(TAG.sequence, tlv(TAG.integer, r), tlv(TAG.integer, s)), new Uint8Array([0]))).isSignedBy(rootCert)).toBe(false);
    expect(await withSignature(tlv(TAG.sequence, tlv(TAG.integer, r), tlv(TAG.integer, s), tlv(TAG.integer, [1]))).isSignedBy(rootCert)).toBe(false);
    expect(await withSignature(tlv(TAG.sequence, tlv(TAG.integer, s), tlv(TAG.integer, r))).isSignedBy(rootCert)).toBe(false);
    expect(await withSignature(tlv(TAG.sequence, tlv(TAG.integer, [0x80, ...r.subarray(1)]), tlv(TAG.integer, s))).isSignedBy(rootCert)).toBe(false);
    expect(await withSignature(tlv(TAG.sequence, tlv(TAG.integer, [0x01, ...new Uint8Array(32)]), tlv(TAG.integer, s))).isSignedBy(rootCert)).toBe(false);
    // Raw r‖s (WebCrypto's own format) in place of the DER structure.
    const raw = new Uint8Array(64);
    raw.set(r.subarray(r.length - 32), 0);
    raw.set(s.subarray(s.length - 32), 32);
    expect(await withSignature(raw).isSignedBy(rootCert)).toBe(false);
    expect(await withSignature(new Uint8Array()).isSignedBy(rootCert)).toBe(false);
  });

  test("other algorithms: P-384, P-521, RSA and Ed25519 signatures verify, and never across key types", async () => {
    const algorithms: [string, RsaHashedKeyGenParams | EcKeyGenParams | Algorithm, Algorithm | EcdsaParams][] = [
      ["1.2.840.10045.4.3.3", { name: "ECDSA", namedCurve: "P-384" }, { name: "ECDSA", hash: "SHA-384" } as EcdsaParams],
      ["1.2.840.10045.4.3.4", { name: "ECDSA", namedCurve: "P-521" }, { name: "ECDSA", hash: "SHA-512" } as EcdsaParams],
      ["1.2.840.10045.4.3.4", { name: "ECDSA", namedCurve: "P-256" }, { name: "ECDSA", hash: "SHA-512" } as EcdsaParams],
      [
        "1.2.840.113549.1.1.11",
        { name: "RSASSA-PKCS1-v1_5", modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: "SHA-256" } as RsaHashedKeyGenParams,
        { name: "RSASSA-PKCS1-v1_5" },
      ],
      ["1.3.101.112", { name: "Ed25519" }, { name: "Ed25519" }],
    ];
    const issuers: { oid: string; cert: Certificate; child: Certificate }[] = [];
    for (const [oid, keyAlg, signAlg] of algorithms) {
      const keys = (await crypto.subtle.generateKey(keyAlg, true, ["sign", "verify"])) as CryptoKeyPair;
      const self = await x509.X509CertificateGenerator.create({
        serialNumber: "02",
        subject: `CN=${oid}`,
        issuer: `CN=${oid}`,
        publicKey: keys.publicKey,
        signingKey: keys.privateKey,
        signingAlgorithm: signAlg,
      });
      // A P-256 child signed by this key: the issuer's key decides the algorithm.
      const child = await x509.X509CertificateGenerator.create({
        serialNumber: "03",
        subject: "CN=child",
        issuer: self.subjectName,
        publicKey: subjectKeys[3]!.publicKey,
        signingKey: keys.privateKey,
        signingAlgorithm: signAlg,
      });
      const cert = Certificate.fromDer(derOf(self));
      expect(cert.signatureAlgorithm).toBe(oid);
      expect(await cert.isSignedBy(cert)).toBe(true);
      expect(await self.verify({ signatureOnly: true })).toBe(true);
      issuers.push({ oid, cert, child: Certificate.fromDer(derOf(child)) });
    }
    for (const a of issuers)
      for (const b of issuers) expect({ signer: a.oid, key: b.cert.subject, ok: await a.child.isSignedBy(b.cert) }).toEqual({ signer: a.oid, key: b.cert.subject, ok: a === b });
    // And none of them verifies with the P-256 root's key, nor the P-256 leaf with theirs.
    const leaf = Certificate.fromDer(leafDer);
    for (const { child, cert } of issuers) {
      expect(await child.isSignedBy(rootCert)).toBe(false);
      expect(await leaf.isSignedBy(cert)).toBe(false);
    }
  });
});

describe("malformed and hostile certificates", () => {
  function problemOf(der: Uint8Array): string | undefined {
    const cert = Certificate.fromDer(der);
    if (cert.extensionProblem !== undefined) expect(cert.known).toEqual({}); // nothing half-decoded is exposed
    return cert.extensionProblem;
  }

  function refused(der: Uint8Array, reason: RegExp): void {
    let thrown: unknown;
    try {
      Certificate.fromDer(der);
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toBeInstanceOf(CertificateError);
    expect((thrown as Error).message).toMatch(reason);
  }

  test("two SAN extensions → extensionProblem, not a throw", async () => {
    const der = await leafWith([
      new x509.SubjectAlternativeNameExtension([{ type: "url", value: "spiffe://example.org/a" }]),
      new x509.SubjectAlternativeNameExtension([{ type: "url", value: "spiffe://example.org/b" }]),
    ]);
    expect(problemOf(der)).toMatch(/2\.5\.29\.17 more than once/);
  });

  test("any extension twice → extensionProblem, unknown ones included", async () => {
    expect(problemOf(await leafWith([new x509.KeyUsagesExtension(1, true), new x509.KeyUsagesExtension(1, true)]))).toMatch(/more than once/);
    expect(problemOf(await leafWith([rawExt("1.2.3.4", false, [5, 0]), rawExt("1.2.3.4", false, [5, 0])]))).toMatch(/1\.2\.3\.4 more than once/);
  });

  test("a SAN whose value is NULL → extensionProblem", async () => {
    expect(problemOf(await leafWith([rawExt(OID.san, false, [0x05, 0x00])]))).toMatch(/2\.5\.29\.17 cannot be parsed/);
  });

  test("a basicConstraints that is not a SEQUENCE → extensionProblem", async () => {
    expect(problemOf(await leafWith([rawExt(OID.basicConstraints, true, [0x05, 0x00])]))).toMatch(/2\.5\.29\.19 cannot be parsed/);
    expect(problemOf(await leafWith([rawExt(OID.basicConstraints, true, [0x01, 0x01, 0xff])]))).toMatch(/2\.5\.29\.19 cannot be parsed/);
  });

  test("a URI SAN with a byte above 0x7f → extensionProblem", async () => {
    const san = tlv(TAG.sequence, tlv(contextTag(6, false), [...ascii("spiffe://example.org/caf"), 0xc3, 0xa9]));
    expect(problemOf(await leafWith([rawExt(OID.san, false, san)]))).toMatch(/non-ASCII/);
    const dns = tlv(TAG.sequence, tlv(contextTag(2, false), [0x78, 0xff]));
    expect(problemOf(await leafWith([rawExt(OID.san, false, dns)]))).toMatch(/non-ASCII/);
  });

  test("other malformed known extensions → extensionProblem", async () => {
    const cases: [string, string, number[] | Uint8Array][] = [
      ["BC cA not 0x00/0xFF", OID.basicConstraints, [0x30, 0x03, 0x01, 0x01, 0x01]],
      ["BC negative pathLen", OID.basicConstraints, [0x30, 0x06, 0x01, 0x01, 0xff, 0x02, 0x01, 0xff]],
      ["BC extra field", OID.basicConstraints, [0x30, 0x08, 0x01, 0x01, 0xff, 0x02, 0x01, 0x00, 0x05, 0x00]],
      ["BC trailing bytes", OID.basicConstraints, [0x30, 0x00, 0x00]],
      ["KU padding bits set", OID.keyUsage, [0x03, 0x02, 0x07, 0x81]],
      ["KU not a BIT STRING", OID.keyUsage, [0x04, 0x01, 0x80]],
      ["EKU holding a non-OID", OID.extKeyUsage, [0x30, 0x03, 0x02, 0x01, 0x01]],
      ["EKU with a non-minimal arc", OID.extKeyUsage, [0x30, 0x05, 0x06, 0x03, 0x2b, 0x80, 0x01]],
      ["SKI not an OCTET STRING", OID.subjectKeyId, [0x02, 0x01, 0x01]],
      ["AKI not a SEQUENCE", OID.authorityKeyId, [0x04, 0x01, 0x01]],
      ["SAN with an unknown GeneralName tag", OID.san, [0x30, 0x03, 0x89, 0x01, 0x00]],
      ["SAN with a universal tag", OID.san, [0x30, 0x03, 0x16, 0x01, 0x61]],
      ["SAN with a malformed directoryName", OID.san, [0x30, 0x04, 0xa4, 0x02, 0x30, 0x05]],
      ["SAN with an indefinite length", OID.san, [0x30, 0x80, 0x86, 0x01, 0x61, 0x00, 0x00]],
    ];
    for (const [what, oid, value] of cases) expect({ what, problem: problemOf(await leafWith([rawExt(oid, false, value)])) }).toEqual({ what, problem: expect.stringContaining(oid) });
  });

  test("BER where DER is due, inside an extension → extensionProblem, never a lenient read", async () => {
    // AKI { [1] authorityCertIssuer, indefinite length, [0] keyIdentifier 'aa', end-of-contents }:
    // a reader taking 0x80 as "length 0" would find keyIdentifier aa and an empty trailer.
    const aki = [0x30, 0x07, 0xa1, 0x80, 0x80, 0x01, 0xaa, 0x00, 0x00];
    expect(problemOf(await leafWith([rawExt(OID.authorityKeyId, false, aki)]))).toMatch(/2\.5\.29\.35 cannot be parsed \(indefinite length/);
    // basicConstraints { cA TRUE, pathLen 1 } with a long-form length for its 6 bytes.
    expect(problemOf(await leafWith([rawExt(OID.basicConstraints, true, [0x30, 0x81, 0x06, 0x01, 0x01, 0xff, 0x02, 0x01, 0x01])]))).toMatch(/non-minimal length/);
    // A URI SAN with a long-form length.
    expect(problemOf(await leafWith([rawExt(OID.san, false, [0x30, 0x04, 0x86, 0x81, 0x01, 0x61])]))).toMatch(/non-minimal length/);
  });

  test("malformed unknown extensions are carried, not judged", async () => {
    const cert = Certificate.fromDer(await leafWith([rawExt("1.2.3.4.5", true, [0x30, 0x80, 0xff])]));
    expect(cert.extensionProblem).toBeUndefined();
    expect(cert.extensions).toEqual([{ oid: "1.2.3.4.5", critical: true, value: new Uint8Array([0x30, 0x80, 0xff]) }]);
  });

  test("extensions in a v1 or v2 certificate → CertificateError", async () => {
    const der = await leafWith([new x509.BasicConstraintsExtension(true, undefined, true)]);
    expect(split(der).fields[0]).toEqual(new Uint8Array([0xa0, 0x03, 0x02, 0x01, 0x02]));
    // The version field left out (v1 by default), written as v1, and written as v2.
    refused(editFields(der, (f) => f.slice(1)), /not version 3/);
    refused(editFields(der, (f) => [tlv(0xa0, tlv(TAG.integer, [0])), ...f.slice(1)]), /not version 3/);
    refused(editFields(der, (f) => [tlv(0xa0, tlv(TAG.integer, [1])), ...f.slice(1)]), /not version 3/);
    // Without the extensions, a v1 certificate is fine.
    const v1 = Certificate.fromDer(editFields(der, (f) => f.slice(1, -1)));
    expect(v1.extensions).toEqual([]);
    expect(v1.known).toEqual({});
  });

  test("a version beyond v3, or a malformed version field → CertificateError", async () => {
    const der = await leafWith([]);
    refused(editFields(der, (f) => [tlv(0xa0, tlv(TAG.integer, [3])), ...f.slice(1)]), /unknown certificate version 4/);
    refused(editFields(der, (f) => [tlv(0xa0, tlv(TAG.integer, [2]), tlv(TAG.integer, [2])), ...f.slice(1)]), /version must hold one INTEGER/);
    refused(editFields(der, (f) => [tlv(0xa0, tlv(TAG.integer, [0x00, 0x02])), ...f.slice(1)]), /non-minimal INTEGER/);
  });

  test("a TBS signature algorithm differing from the outer one → CertificateError", async () => {
    const der = await leafWith([]);
    const sha384 = tlv(TAG.sequence, tlv(TAG.oid, OID_BYTES.ecdsaWithSha384));
    refused(editFields(der, (f) => f.map((x, i) => (i === 2 ? sha384 : x))), /signature algorithm differs/);
    // Same OID, but parameters added: the bytes differ, so it is refused too.
    const withNull = tlv(TAG.sequence, tlv(TAG.oid, OID_BYTES.ecdsaWithSha256), tlv(TAG.null));
    refused(editFields(der, (f) => f.map((x, i) => (i === 2 ? withNull : x))), /signature algorithm differs/);
    // And the outer one changed instead.
    refused(join({ ...split(der), sigAlg: sha384 }), /signature algorithm differs/);
  });

  test("a non-minimal length inside the subjectPublicKeyInfo → CertificateError (found by the fuzzer)", () => {
    // The key's BIT STRING length written as 81 00: @peculiar/x509 then read the certificate as having no extensions.
    const der = Buffer.from(
      "308201253081cda003020102020101300a06082a8648ce3d040302300c310a30080603550403130172301e170d3234303130313030303030305a170d3334303130313030303030305a30003059301306072a8648ce3d020106082a8648ce3d030107038100046dc603402b0af84cb8a2559e4e53a4df54ed701964a927c6d2613ee242ab3532e7aee2c3c4b1c4889f94a35dba0adc3d2c452a77f2139b694f908c57b3e193f5a32c302a301a0603551d110101ff0410300e860c7370696666653a2f2f742f75300c0603551d13040530030101ff300a06082a8648ce3d0403020347003044022034d911aac522fc9c14a4c998ae50487c1eee5f04bca3cd76a3c83542c5f480ee02203af28fc69cd669dc8c4618d9654f48134ee5d820f4fcd6fa64c98090dddcf6a2",
      "hex",
    );
    expect(() => Certificate.fromDer(new Uint8Array(der))).toThrow(/non-minimal length/);
  });

  test("structural damage → CertificateError", async () => {
    const der = await leafWith([new x509.BasicConstraintsExtension(false, undefined, true)]);
    const parts = split(der);
    refused(new Uint8Array(), /truncated/);
    refused(concat(der, new Uint8Array([0x00])), /1 trailing bytes/);
    // The same certificate in BER, with an indefinite outer length and end-of-contents.
    refused(concat(new Uint8Array([0x30, 0x80]), der.subarray(4), new Uint8Array([0, 0])), /indefinite length/);
    refused(der.subarray(0, der.length - 1), /runs past/);
    refused(tlv(TAG.set, der.subarray(4)), /expected tag 0x30/);
    refused(tlv(TAG.sequence, tlv(TAG.sequence, ...parts.fields), parts.sigAlg), /exactly three parts/);
    refused(tlv(TAG.sequence, tlv(TAG.sequence, ...parts.fields), parts.sigAlg, parts.sigValue, tlv(TAG.null)), /exactly three parts/);
    refused(tlv(TAG.sequence, tlv(TAG.set, ...parts.fields), parts.sigAlg, parts.sigValue), /tbsCertificate is not a SEQUENCE/);
    // The signature BIT STRING with unused bits (its last bits zero, so only the count is wrong).
    expect(parts.sigValue.subarray(0, 3)).toEqual(new Uint8Array([TAG.bitString, parts.sigValue.length - 2, 0x00]));
    const sigBody = parts.sigValue.subarray(3);
    const padded = concat(sigBody.subarray(0, -1), new Uint8Array([sigBody[sigBody.length - 1]! & 0xfe]));
    refused(join({ ...parts, sigValue: tlv(TAG.bitString, [1], padded) }), /unused bits/);
    refused(join({ ...parts, sigAlg: tlv(TAG.sequence) }), /empty AlgorithmIdentifier/);
    // Missing and extra TBS fields.
    refused(editFields(der, (f) => f.slice(0, 6)), /no subjectPublicKeyInfo/);
    refused(editFields(der, (f) => f.slice(0, 3)), /no issuer/);
    refused(editFields(der, (f) => [...f, tlv(TAG.null)]), /unexpected fields after the extensions/);
    refused(editFields(der, (f) => [...f, extensionsField()]), /unexpected fields/); // a second [3]
    refused(editFields(der, (f) => f.map((x, i) => (i === 4 ? tlv(TAG.sequence, tlv(TAG.utcTime, ascii("240101000000Z"))) : x))), /two times/);
    refused(editFields(der, (f) => f.map((x, i) => (i === 4 ? tlv(TAG.sequence, tlv(TAG.utcTime, ascii("240230000000Z")), tlv(TAG.utcTime, ascii("250101000000Z"))) : x))), /impossible time/);
    refused(editFields(der, (f) => f.map((x, i) => (i === 3 ? tlv(TAG.set) : x))), /issuer is not a SEQUENCE/);
    refused(editFields(der, (f) => f.map((x, i) => (i === 5 ? tlv(TAG.sequence, tlv(TAG.sequence)) : x))), /RDN .* is not a SET/);
    refused(editFields(der, (f) => f.map((x, i) => (i === 5 ? tlv(TAG.sequence, tlv(TAG.set, tlv(TAG.sequence, tlv(TAG.oid, [0x55, 0x04, 0x03])))) : x))), /malformed name attribute/);
    refused(editFields(der, (f) => f.map((x, i) => (i === 1 ? tlv(TAG.integer, [0x00, 0x01]) : x))), /non-minimal INTEGER/);
    refused(editFields(der, (f) => f.map((x, i) => (i === 1 ? tlv(TAG.integer) : x))), /expected an INTEGER/);
  });

  test("malformed extension wrappers → CertificateError", async () => {
    const der = await leafWith([]);
    const withExts = (...exts: Uint8Array[]) => editFields(der, (f) => [...f.slice(0, 7), extensionsField(...exts)]);
    const bc = [0x30, 0x03, 0x01, 0x01, 0xff];
    expect(Certificate.fromDer(withExts(extension(OID_BYTES.basicConstraints, true, bc))).known.basicConstraints).toEqual({ ca: true });
    refused(withExts(extension(OID_BYTES.basicConstraints, tlv(TAG.boolean, [0x01]), bc)), /neither 0x00 nor 0xFF/);
    refused(withExts(tlv(TAG.sequence, tlv(TAG.oid, OID_BYTES.basicConstraints))), /2\.5\.29\.19 is malformed/);
    refused(withExts(tlv(TAG.sequence, tlv(TAG.oid, OID_BYTES.unknown), tlv(TAG.octetString), tlv(TAG.null))), /1\.2\.3\.4\.5 is malformed/);
    refused(withExts(tlv(TAG.sequence, tlv(TAG.oid, OID_BYTES.unknown), tlv(TAG.bitString, [0]))), /is malformed/);
    refused(withExts(tlv(TAG.set, tlv(TAG.oid, OID_BYTES.unknown), tlv(TAG.octetString))), /not a SEQUENCE/);
    refused(withExts(tlv(TAG.sequence, tlv(TAG.oid, [0x2a, 0x80, 0x01]), tlv(TAG.octetString))), /non-minimal OBJECT IDENTIFIER/);
    refused(editFields(der, (f) => [...f.slice(0, 7), tlv(contextTag(3, true), tlv(TAG.sequence), tlv(TAG.sequence))]), /one SEQUENCE/);
    refused(editFields(der, (f) => [...f.slice(0, 7), tlv(contextTag(3, true), tlv(TAG.set))]), /one SEQUENCE/);
    // An empty extensions SEQUENCE is read as no extensions.
    expect(Certificate.fromDer(withExts()).extensions).toEqual([]);
  });

  test("issuerUniqueID and subjectUniqueID are skipped", async () => {
    const der = await leafWith([new x509.BasicConstraintsExtension(false, undefined, true)]);
    const cert = Certificate.fromDer(editFields(der, (f) => [...f.slice(0, 7), tlv(0x81, [0, 1]), tlv(0x82, [0, 2]), ...f.slice(7)]));
    expect(cert.known.basicConstraints).toEqual({ ca: false });
  });

  // Findings, reported rather than fixed here (src/ belongs to another change): a
  // GeneralName of a primitive-only kind ([1] rfc822Name, [2] dNSName, [6] URI, [7] iPAddress,
  // [8] registeredID) in the constructed form, or an otherName ([0]) in the primitive form,
  // is not DER, yet generalNames() skips it silently. A BER reader that accepts constructed
  // strings (OpenSSL does) reads [6] constructed as one more URI, so the same certificate
  // can carry one URI SAN for mesh and two for another verifier. @peculiar/x509 refuses the
  // whole SAN ("Wrong values for Choice type").
  test("a URI SAN in the constructed form → extensionProblem", async () => {
    const hidden = tlv(contextTag(6, true), tlv(TAG.ia5String, ascii("spiffe://example.org/hidden")));
    const san = tlv(TAG.sequence, tlv(contextTag(6, false), ascii("spiffe://example.org/a")), hidden);
    expect(problemOf(await leafWith([rawExt(OID.san, false, san)]))).toMatch(/2\.5\.29\.17/);
  });
  test("an otherName SAN in the primitive form → extensionProblem", async () => {
    const san = tlv(TAG.sequence, tlv(contextTag(0, false), [1, 2]), tlv(contextTag(6, false), ascii("spiffe://example.org/a")));
    expect(problemOf(await leafWith([rawExt(OID.san, false, san)]))).toMatch(/2\.5\.29\.17/);
  });
});

// ---------------------------------------------------------------------------------
// Mutation fuzzing.

/** Offsets of every length octet in `der`, descending into constructed elements and into OCTET/BIT STRINGs that hold DER. */
function lengthOffsets(der: Uint8Array, from = 0, to = der.length, out: number[] = []): number[] {
  for (let at = from; at < to; ) {
    const tag = der[at]!;
    const first = der[at + 1]!;
    const count = first & 0x80 ? first & 0x7f : 0;
    for (let i = 1; i <= 1 + count; i++) out.push(at + i);
    let length = first & 0x80 ? 0 : first;
    for (let i = 0; i < count; i++) length = length * 256 + der[at + 2 + i]!;
    const body = at + 2 + count;
    const end = body + length;
    if (tag & 0x20) lengthOffsets(der, body, end, out);
    else if ((tag === TAG.octetString || tag === TAG.bitString) && end > body) {
      const inner = tag === TAG.bitString ? body + 1 : body;
      if (parsesAsDer(der, inner, end)) lengthOffsets(der, inner, end, out);
    }
    at = end;
  }
  return out;
}

function parsesAsDer(der: Uint8Array, from: number, to: number): boolean {
  try {
    const seq = { tag: TAG.sequence, start: from, body: from, end: to };
    return children(der, seq).length > 0;
  } catch {
    return false;
  }
}

/** The byte range of the [3] extensions field. */
function extensionsRange(der: Uint8Array): [number, number] {
  const [tbs] = children(der, readRoot(der, TAG.sequence, "seed"));
  const ext = children(der, tbs!).find((t) => t.tag === contextTag(3, true));
  if (!ext) throw new Error("seed without extensions");
  return [ext.start, ext.end];
}

interface Seed {
  der: Uint8Array<ArrayBuffer>;
  lengths: number[];
  ext: [number, number];
}

function mutate(rnd: Random, seed: Seed): { der: Uint8Array<ArrayBuffer>; ops: string[] } {
  let der = seed.der.slice();
  const ops: string[] = [];
  const rounds = 1 + Math.floor(rnd() * 3);
  for (let k = 0; k < rounds; k++) {
    // Most mutations land in the extensions, where the fields compared below live.
    const [lo, hi] = chance(rnd, 0.65) ? seed.ext : [0, der.length];
    const pos = Math.min(der.length - 1, lo + Math.floor(rnd() * (hi - lo)));
    const op = Math.floor(rnd() * 7);
    if (der.length === 0) break;
    if (op === 0) {
      const mask = 1 << Math.floor(rnd() * 8);
      der[pos]! ^= mask;
      ops.push(`flip bit ${mask.toString(16)} @${pos}`);
    } else if (op === 1) {
      const v = Math.floor(rnd() * 256);
      der[pos] = v;
      ops.push(`set @${pos}=${v.toString(16)}`);
    } else if (op === 2) {
      const v = pick(rnd, [0x00, 0x01, 0x05, 0x30, 0x80, 0x81, 0x86, 0xa0, 0xff, Math.floor(rnd() * 256)]);
      der = concat(der.subarray(0, pos), new Uint8Array([v]), der.subarray(pos));
      ops.push(`insert ${v.toString(16)} @${pos}`);
    } else if (op === 3) {
      der = concat(der.subarray(0, pos), der.subarray(pos + 1));
      ops.push(`delete @${pos}`);
    } else if (op === 4) {
      const at = Math.floor(rnd() * der.length);
      der = der.slice(0, at);
      ops.push(`truncate to ${at}`);
    } else {
      // A length octet: nudged by ±1, or set to a boundary value.
      const at = pick(rnd, seed.lengths);
      if (at >= der.length) continue;
      const v = chance(rnd, 0.6) ? (der[at]! + (chance(rnd, 0.5) ? 1 : 255)) & 0xff : pick(rnd, [0x00, 0x7f, 0x80, 0x81, 0x82, 0x84, 0x85, 0xff]);
      der[at] = v;
      ops.push(`length @${at}=${v.toString(16)}`);
    }
  }
  return { der, ops };
}

/**
 * The fields compared between the parsers. URIs and cA are the ones verification turns
 * on; the rest costs nothing more to compare. Names are left out: their text differs on
 * purpose (see NAMES), and for an undecodable string mesh shows #hex where
 * @peculiar/x509 shows whatever it decoded.
 */
interface View {
  uris?: string[];
  ca?: boolean;
  dns?: string[];
  pathLength?: number;
  keyUsage?: number;
  extKeyUsage?: string[];
  subjectKeyId?: string;
  authorityKeyId?: string;
  serial: string;
  notBefore: number;
  notAfter: number;
  extensions: string[];
}

function ourView(c: Certificate): View {
  const k = c.known;
  return {
    uris: k.san?.uris,
    ca: k.basicConstraints?.ca,
    dns: k.san?.dns,
    pathLength: k.basicConstraints?.pathLength,
    keyUsage: k.keyUsage,
    extKeyUsage: k.extKeyUsage,
    subjectKeyId: k.subjectKeyId,
    authorityKeyId: k.authorityKeyId,
    serial: c.serialNumber.replace(/^00(?=[89a-f])/, ""), // see expectAgreement
    notBefore: c.notBefore.getTime(),
    notAfter: c.notAfter.getTime(),
    extensions: c.extensions.map((e) => `${e.oid}${e.critical ? "!" : ""}`),
  };
}

/** What @peculiar/x509 reads, or undefined when it refuses the certificate or its extensions. */
function peculiarView(der: Uint8Array<ArrayBuffer>): View | undefined {
  try {
    const cert = new x509.X509Certificate(der);
    const exts = cert.extensions; // throws when one of them does not parse
    const find = <T extends x509.Extension>(type: abstract new (...args: never[]) => T): T | undefined => exts.find((e): e is T => e instanceof type);
    const san = find(x509.SubjectAlternativeNameExtension);
    const bc = find(x509.BasicConstraintsExtension);
    const ku = find(x509.KeyUsagesExtension);
    return {
      uris: san && peculiarSanNames(cert, "url"),
      ca: bc?.ca,
      dns: san && peculiarSanNames(cert, "dns"),
      pathLength: bc?.pathLength,
      // An empty keyUsage BIT STRING reads as NaN there, 0 here (see "a keyUsage with no bits set").
      keyUsage: ku && (Number.isNaN(ku.usages) ? 0 : ku.usages),
      extKeyUsage: find(x509.ExtendedKeyUsageExtension)?.usages.map(String),
      subjectKeyId: find(x509.SubjectKeyIdentifierExtension)?.keyId.toLowerCase(),
      authorityKeyId: find(x509.AuthorityKeyIdentifierExtension)?.keyId?.toLowerCase(),
      serial: cert.serialNumber.toLowerCase(),
      notBefore: cert.notBefore.getTime(),
      notAfter: cert.notAfter.getTime(),
      extensions: exts.map((e) => `${e.type}${e.critical ? "!" : ""}`),
    };
  } catch {
    return undefined;
  }
}

describe("mutation fuzzing", () => {
  const MUTATIONS = 24_000;
  let seeds: Seed[];

  beforeAll(async () => {
    const leafKeys = subjectKeys[2]!;
    const ders = [
      // A SPIFFE leaf with every extension mesh reads, and an otherName beside the URI.
      derOf(
        await make({
          subject: "CN=w",
          issuer: root.subjectName,
          keys: leafKeys,
          signer: rootKeys,
          extensions: [
            new x509.BasicConstraintsExtension(false, undefined, true),
            new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
            new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
            sanWithOtherName(false, "spiffe://example.org/ns/a/sa/b", "spiffe://example.org/x"),
            await x509.SubjectKeyIdentifierExtension.create(leafKeys.publicKey),
            await x509.AuthorityKeyIdentifierExtension.create(rootKeys.publicKey),
          ],
        }),
      ),
      // A CA with a path length, several SAN kinds, GeneralizedTime, a high-bit serial.
      derOf(
        await make({
          subject: "CN=i, O=o",
          issuer: "CN=i, O=o",
          keys: leafKeys,
          signer: leafKeys,
          serial: "8badf00d",
          notAfter: new Date("2060-01-01T00:00:00Z"),
          extensions: [
            new x509.SubjectAlternativeNameExtension(
              [
                { type: "dns", value: "a.example" },
                { type: "url", value: "spiffe://example.org" },
                { type: "ip", value: "10.1.2.3" },
                { type: "url", value: "urn:u" },
              ],
              true,
            ),
            new x509.BasicConstraintsExtension(true, 2, true),
            rawExt("1.2.3.4.5", false, [0x05, 0x00]),
          ],
        }),
      ),
      // Small: just a SAN and basicConstraints, so most bytes are in the extensions.
      derOf(
        await make({
          subject: "",
          issuer: "CN=r",
          keys: leafKeys,
          signer: rootKeys,
          extensions: [
            new x509.SubjectAlternativeNameExtension([{ type: "url", value: "spiffe://t/u" }], true),
            new x509.BasicConstraintsExtension(true, undefined, false),
          ],
        }),
      ),
    ];
    seeds = ders.map((der) => ({ der, lengths: lengthOffsets(der), ext: extensionsRange(der) }));
  });

  test("the seeds read alike in both parsers", () => {
    for (const seed of seeds) {
      const ours = Certificate.fromDer(seed.der);
      expect(ours.extensionProblem).toBeUndefined();
      expect(peculiarView(seed.der)).toEqual(ourView(ours));
      expect(seed.lengths.length).toBeGreaterThan(30);
    }
  });

  test(
    `${MUTATIONS} seeded mutations: only CertificateError escapes, and where both parsers accept, they agree`,
    () => {
      const rnd = seeded(0xf022);
      const escaped: string[] = [];
      const disagreements: string[] = [];
      const outcome = { refused: 0, parsed: 0, flagged: 0, compared: 0, peculiarRefused: 0 };
      let slowest = 0;
      for (let n = 0; n < MUTATIONS; n++) {
        const seed = seeds[n % seeds.length]!;
        const { der, ops } = mutate(rnd, seed);
        const t0 = performance.now();
        let ours: Certificate;
        try {
          ours = Certificate.fromDer(der);
        } catch (err) {
          if (!(err instanceof CertificateError)) escaped.push(`#${n} ${ops.join(", ")}: ${String(err)} ← ${toHex(der)}`);
          outcome.refused++;
          continue;
        } finally {
          slowest = Math.max(slowest, performance.now() - t0);
        }
        outcome.parsed++;
        if (ours.extensionProblem !== undefined) {
          outcome.flagged++;
          expect(ours.known).toEqual({});
          continue;
        }
        // Every decoded field is well-typed whenever the parse succeeded.
        expect(ours.notBefore.getTime()).not.toBeNaN();
        expect(ours.notAfter.getTime()).not.toBeNaN();
        expect(ours.serialNumber).toMatch(/^[0-9a-f]+$/);
        const theirs = peculiarView(der);
        if (!theirs) {
          outcome.peculiarRefused++;
          continue;
        }
        outcome.compared++;
        const mine = ourView(ours);
        if (JSON.stringify(mine) !== JSON.stringify(theirs))
          disagreements.push(`#${n} ${ops.join(", ")}: mesh ${JSON.stringify(mine)}, @peculiar/x509 ${JSON.stringify(theirs)} ← ${toHex(der)}`);
      }
      expect(escaped).toEqual([]);
      expect(disagreements).toEqual([]);
      // The mutations reach every outcome, or the fuzzing has gone blind.
      expect(outcome.refused).toBeGreaterThan(MUTATIONS / 4);
      expect(outcome.flagged).toBeGreaterThan(100);
      expect(outcome.compared).toBeGreaterThan(300);
      // Parsing is linear: no input takes long (the bound is generous for slow machines).
      expect(slowest).toBeLessThan(250);
    },
    30_000,
  );
});
