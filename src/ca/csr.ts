/**
 * Signing a certificate request. The CSR proves possession of a key; it may ask for
 * nothing beyond the identity the operator (or, later, a join token) grants. Anything
 * else it asks for is refused, not silently dropped, so a misbehaving client is seen.
 */
import { DataError } from "../core/errors.ts";
import { decodePem } from "../pki/pem.ts";
import { x509 } from "../pki/x509.ts";

const { KeyUsageFlags, ExtendedKeyUsage } = x509;

const ALLOWED_CURVES = new Set(["P-256", "P-384"]);
const OID = {
  san: "2.5.29.17",
  basicConstraints: "2.5.29.19",
  keyUsage: "2.5.29.15",
  extKeyUsage: "2.5.29.37",
  subjectKeyId: "2.5.29.14",
} as const;

export interface CsrGrant {
  /** The one SPIFFE ID the certificate will carry. */
  spiffeId: string;
  /** The service name; a subject CN, if the CSR sets one, must equal it. */
  service: string;
  /** DNS names the CSR may ask for. */
  dnsNames: string[];
}

/** "NEW CERTIFICATE REQUEST" is the label older tools (Netscape, some Java keytools) still write. */
const CSR_LABELS = new Set(["CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"]);

/**
 * The PEM block's label is read first, so a certificate or a key given as a CSR is named as
 * what it is; the ASN.1 library's own words (minified class names) never reach the user.
 */
export function parseCsr(pem: string, where: string): x509.Pkcs10CertificateRequest {
  let blocks;
  try {
    blocks = decodePem(pem);
  } catch (err) {
    throw new DataError(`not a PEM CERTIFICATE REQUEST: ${(err as Error).message}`, where);
  }
  const csr = blocks.find((b) => CSR_LABELS.has(b.type));
  if (csr === undefined) {
    const other = blocks[0];
    throw new DataError(other ? `holds a ${other.type} block (line ${other.line}), not a PEM CERTIFICATE REQUEST` : "not a PEM CERTIFICATE REQUEST: no PEM block found", where);
  }
  try {
    return new x509.Pkcs10CertificateRequest(csr.der);
  } catch {
    throw new DataError(`not a PEM CERTIFICATE REQUEST: the ${csr.type} block at line ${csr.line} is not a PKCS#10 request`, where);
  }
}

/** Checks a CSR against what is granted; returns its public key for signing. */
export async function checkCsr(csr: x509.Pkcs10CertificateRequest, grant: CsrGrant, where: string): Promise<CryptoKey> {
  const fail = (why: string) => new DataError(why, where);
  const alg = csr.publicKey.algorithm as EcKeyAlgorithm;
  if (alg.name !== "ECDSA" || !ALLOWED_CURVES.has(alg.namedCurve))
    throw fail(`key algorithm ${alg.name}${alg.namedCurve ? ` ${alg.namedCurve}` : ""} is not accepted; use ECDSA P-256 or P-384`);
  let signatureOk = false;
  try {
    signatureOk = await csr.verify();
  } catch {
    signatureOk = false;
  }
  if (!signatureOk) throw fail("CSR signature does not verify: the request was altered or not signed by its key");

  const cn = csr.subjectName.getField("CN");
  if (cn.length > 1 || (cn.length === 1 && cn[0] !== grant.service))
    throw fail(`subject CN "${cn.join(", ")}" is not the granted service "${grant.service}"`);

  for (const ext of csr.extensions) checkExtension(ext, grant, fail);
  return csr.publicKey.export({ name: "ECDSA", namedCurve: alg.namedCurve }, ["verify"]);
}

function checkExtension(ext: x509.Extension, grant: CsrGrant, fail: (why: string) => DataError): void {
  switch (ext.type) {
    case OID.san: {
      const san = new x509.SubjectAlternativeNameExtension(ext.rawData);
      for (const name of san.names.items) {
        if (name.type === "url" && name.value === grant.spiffeId) continue;
        if (name.type === "dns" && grant.dnsNames.includes(name.value)) continue;
        throw fail(`CSR asks for SAN ${name.type}:${name.value}, which is not granted (allowed: URI ${grant.spiffeId}${grant.dnsNames.map((d) => `, DNS ${d}`).join("")})`);
      }
      return;
    }
    case OID.basicConstraints:
      if (new x509.BasicConstraintsExtension(ext.rawData).ca) throw fail("CSR asks for CA=true; workload certificates are never CAs");
      return;
    case OID.keyUsage: {
      const usages = new x509.KeyUsagesExtension(ext.rawData).usages;
      if (usages & (KeyUsageFlags.keyCertSign | KeyUsageFlags.cRLSign)) throw fail("CSR asks for keyCertSign or cRLSign");
      return;
    }
    case OID.extKeyUsage: {
      const allowed: string[] = [ExtendedKeyUsage.serverAuth, ExtendedKeyUsage.clientAuth];
      for (const u of new x509.ExtendedKeyUsageExtension(ext.rawData).usages)
        if (!allowed.includes(String(u))) throw fail(`CSR asks for extended key usage ${String(u)}`);
      return;
    }
    case OID.subjectKeyId:
      return;
    default:
      throw fail(`CSR asks for extension ${ext.type}, which mesh does not grant`);
  }
}
