/**
 * The etcd client's TLS files, checked for what they hold. Bun's fetch takes any text as
 * ca, cert or key and fails only at the handshake, where a key given as the CA reads as a
 * member that does not answer; checked when read, the file is blamed instead. Any key type
 * etcd's clients use (RSA, EC, PKCS#1, SEC1, PKCS#8) is taken: node:crypto parses them.
 */
import { createPrivateKey, X509Certificate, type KeyObject } from "node:crypto";
import { decodePem, type PemBlock } from "../pki/pem.ts";

/** Which file: the CA bundle that signed the members' certificates, the client certificate, its key. */
export type EtcdTlsFile = "ca" | "cert" | "key";

const WHAT: Record<EtcdTlsFile, string> = { ca: "CA certificates", cert: "a client certificate", key: "a private key" };

/** Why `text` cannot serve as the `file`, or undefined when it can. */
export function etcdTlsFileProblem(file: EtcdTlsFile, text: string): string | undefined {
  let blocks: PemBlock[];
  try {
    blocks = decodePem(text);
  } catch (err) {
    return `is not valid PEM: ${(err as Error).message}`;
  }
  const keys = blocks.filter((b) => b.type.endsWith("PRIVATE KEY"));
  const certs = blocks.filter((b) => b.type === "CERTIFICATE");
  if (file === "key") {
    if (keys.length === 0) return `holds ${heldInstead(blocks)}; expected ${WHAT.key}`;
    const key = keyObject(text);
    return key instanceof Error ? `private key cannot be read: ${key.message}` : undefined;
  }
  // The CA bundle is not secret; a key pasted into it would be read by whoever reads the bundle.
  if (file === "ca" && keys.length > 0) return `holds a private key ("${keys[0]!.type}" block at line ${keys[0]!.line}); expected only ${WHAT.ca}`;
  if (certs.length === 0) return `holds ${heldInstead(blocks)}; expected ${WHAT[file]}`;
  for (const [i, b] of certs.entries()) {
    try {
      new X509Certificate(b.der);
    } catch {
      // The TLS library's reason is an OpenSSL code ("NO_START_LINE"), which says nothing to the operator.
      return `certificate #${i + 1} (the block at line ${b.line}) is not a valid X.509 certificate`;
    }
  }
  return undefined;
}

/** Whether the key is the client certificate's (its first certificate's): a mismatch fails every handshake. */
export function etcdClientKeyMatches(certText: string, keyText: string): boolean {
  const cert = decodePem(certText).find((b) => b.type === "CERTIFICATE");
  const key = keyObject(keyText);
  return cert === undefined || key instanceof Error || new X509Certificate(cert.der).checkPrivateKey(key);
}

/** The key as TLS will read it: the text whole (legacy encryption headers and all), its first key block. */
function keyObject(text: string): KeyObject | Error {
  try {
    return createPrivateKey(text);
  } catch (err) {
    return err as Error;
  }
}

function heldInstead(blocks: readonly PemBlock[]): string {
  if (blocks.length === 0) return "no PEM block";
  const types = [...new Set(blocks.map((b) => `"${b.type}"`))];
  return blocks.length === 1 ? `only a ${types[0]} block` : `only ${types.join(", ")} blocks`;
}
