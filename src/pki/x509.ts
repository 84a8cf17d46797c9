/**
 * The one place that loads @peculiar/x509. It uses decorators that need
 * reflect-metadata loaded first, and it must use the runtime's WebCrypto.
 */
import "reflect-metadata";
import * as x509 from "@peculiar/x509";

x509.cryptoProvider.set(crypto);

export { x509 };

/** ECDSA P-256 with SHA-256: the only key and signature algorithm mesh issues. */
export const EC_KEY_ALG = { name: "ECDSA", namedCurve: "P-256" } as const;
export const EC_SIGN_ALG = { name: "ECDSA", hash: "SHA-256" } as const;

export async function generateKeyPair(): Promise<CryptoKeyPair> {
  return (await crypto.subtle.generateKey(EC_KEY_ALG, true, ["sign", "verify"])) as CryptoKeyPair;
}

export async function exportPrivateKeyPem(key: CryptoKey): Promise<string> {
  const der = await crypto.subtle.exportKey("pkcs8", key);
  return x509.PemConverter.encode(der, "PRIVATE KEY") + "\n";
}

/** Imports a PKCS#8 P-256 key; the public half is derived so callers get a usable pair. */
export async function importPrivateKeyPem(pem: string): Promise<CryptoKeyPair> {
  const blocks = x509.PemConverter.decodeWithHeaders(pem).filter((b) => b.type === "PRIVATE KEY");
  const first = blocks[0];
  if (!first) throw new Error("no PKCS#8 'PRIVATE KEY' block found");
  const privateKey = await crypto.subtle.importKey("pkcs8", first.rawData, EC_KEY_ALG, true, ["sign"]);
  const jwk = await crypto.subtle.exportKey("jwk", privateKey);
  delete jwk.d;
  jwk.key_ops = ["verify"];
  const publicKey = await crypto.subtle.importKey("jwk", jwk, EC_KEY_ALG, true, ["verify"]);
  return { privateKey, publicKey };
}

export function certToPem(cert: x509.X509Certificate): string {
  return cert.toString("pem") + "\n";
}

/** Parses every CERTIFICATE block of a PEM text, in order. */
export function parseCertificates(pem: string): x509.X509Certificate[] {
  return x509.PemConverter.decodeWithHeaders(pem)
    .filter((b) => b.type === "CERTIFICATE")
    .map((b) => new x509.X509Certificate(b.rawData));
}

export function randomSerial(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[0] = (bytes[0]! & 0x7f) | 0x01; // positive and non-zero, per RFC 5280 §4.1.2.2
  return Buffer.from(bytes).toString("hex");
}
