/**
 * The one place that loads @peculiar/x509. It uses decorators that need
 * reflect-metadata loaded first, and it must use the runtime's WebCrypto.
 */
import "reflect-metadata";
import * as x509 from "@peculiar/x509";

x509.cryptoProvider.set(crypto);

export { x509 };

export { EC_KEY_ALG, EC_SIGN_ALG, exportPrivateKeyPem, generateKeyPair, importPrivateKeyPem } from "./keys.ts";

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
