/** A certificate request for this workload's identity, signed by a key made here and kept here. */
import { x509 } from "../../pki/x509.ts";
import { EC_SIGN_ALG } from "../../pki/x509.ts";

export async function makeCsr(keys: CryptoKeyPair, spiffeId: string, service: string): Promise<string> {
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: `CN=${service}`,
    keys,
    signingAlgorithm: EC_SIGN_ALG,
    extensions: [new x509.SubjectAlternativeNameExtension([{ type: "url", value: spiffeId }])],
  });
  return csr.toString("pem");
}
