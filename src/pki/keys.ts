/** Workload and CA keys: ECDSA P-256, made and kept with WebCrypto, stored as PKCS#8 PEM. */
import { decodePem, encodePem } from "./pem.ts";

/** ECDSA P-256 with SHA-256: the only key and signature algorithm mesh issues. */
export const EC_KEY_ALG = { name: "ECDSA", namedCurve: "P-256" } as const;
export const EC_SIGN_ALG = { name: "ECDSA", hash: "SHA-256" } as const;

export async function generateKeyPair(): Promise<CryptoKeyPair> {
  return (await crypto.subtle.generateKey(EC_KEY_ALG, true, ["sign", "verify"])) as CryptoKeyPair;
}

export async function exportPrivateKeyPem(key: CryptoKey): Promise<string> {
  return encodePem("PRIVATE KEY", await crypto.subtle.exportKey("pkcs8", key));
}

/** Imports a PKCS#8 P-256 key; the public half is derived so callers get a usable pair. */
export async function importPrivateKeyPem(pem: string): Promise<CryptoKeyPair> {
  const first = decodePem(pem).find((b) => b.type === "PRIVATE KEY");
  if (!first) throw new Error("no PKCS#8 'PRIVATE KEY' block found");
  const privateKey = await crypto.subtle.importKey("pkcs8", first.der, EC_KEY_ALG, true, ["sign"]);
  const jwk = await crypto.subtle.exportKey("jwk", privateKey);
  delete jwk.d;
  jwk.key_ops = ["verify"];
  const publicKey = await crypto.subtle.importKey("jwk", jwk, EC_KEY_ALG, true, ["verify"]);
  return { privateKey, publicKey };
}
