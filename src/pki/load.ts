/**
 * Certificates and keys read for verification, with errors that name the file and
 * what it should hold. Nothing here can issue; see ../ca for that.
 */
import { DataError } from "../core/errors.ts";
import { Certificate } from "./certificate.ts";
import { importPrivateKeyPem } from "./keys.ts";
import { decodePem } from "./pem.ts";
import { parseSpiffeId } from "./spiffe.ts";

/** Every CERTIFICATE block of PEM text read from `path` (if it came from a file), parsed; none is an error. */
export function readCertificates(text: string, path: string | undefined, what: string): Certificate[] {
  let all;
  try {
    all = decodePem(text);
  } catch (err) {
    throw new DataError(`${what} is not valid PEM: ${(err as Error).message}`, path);
  }
  // Certificates are handed out (a bundle to every workload, a chain in every handshake's
  // reach): a key pasted among them would go with them, so the file is refused.
  const key = all.find((b) => b.type.endsWith("PRIVATE KEY"));
  if (key !== undefined) throw new DataError(`${what} holds a private key ("${key.type}" block at line ${key.line}); keep keys in their own file`, path);
  const blocks = all.filter((b) => b.type === "CERTIFICATE");
  if (blocks.length === 0) throw new DataError(`no CERTIFICATE block found in ${what}`, path);
  return blocks.map((b, i) => {
    try {
      return Certificate.fromDer(b.der);
    } catch (err) {
      throw new DataError(`certificate #${i + 1} of the ${what} cannot be parsed: ${(err as Error).message}`, path);
    }
  });
}

export async function importKeyText(text: string, path: string, what: string): Promise<CryptoKeyPair> {
  try {
    return await importPrivateKeyPem(text);
  } catch (err) {
    throw new DataError(`${what} is not a PKCS#8 ECDSA P-256 key: ${(err as Error).message}`, path);
  }
}

/** Keys and certificates must belong together; a mismatch would issue or present unverifiable certificates. */
export async function assertKeyMatches(certSpki: Uint8Array, keys: CryptoKeyPair, where: string): Promise<void> {
  const spki = new Uint8Array(await crypto.subtle.exportKey("spki", keys.publicKey));
  if (Buffer.compare(certSpki, spki) !== 0) throw new DataError("private key does not match its certificate", where);
}

/** The trust domain a CA certificate speaks for: its one URI SAN, `spiffe://<td>`. */
export function trustDomainOfCa(cert: Certificate, where: string): string {
  if (cert.extensionProblem) throw new DataError(`CA certificate: ${cert.extensionProblem}`, where);
  const uris = cert.known.san?.uris ?? [];
  if (uris.length !== 1) throw new DataError(`CA certificate must carry exactly one spiffe:// URI SAN, found ${uris.length}`, where);
  const parsed = parseSpiffeId(uris[0]!);
  if (!parsed.ok) throw new DataError(parsed.reason, where);
  if (parsed.id.path !== "") throw new DataError(`CA URI SAN "${uris[0]}" must have no path`, where);
  return parsed.id.trustDomain;
}
