/**
 * A certificate request (PKCS#10, RFC 2986) for this workload's identity, signed by a
 * key made here and kept here. Written directly in DER: it is one fixed shape (CN,
 * one URI SAN, ECDSA P-256 with SHA-256), and the control plane checks every field.
 */
import { bitString, oid, tlv, unsignedInteger, utf8String } from "../../pki/der-write.ts";
import { TAG, contextTag } from "../../pki/der.ts";
import { OID } from "../../pki/certificate.ts";
import { EC_SIGN_ALG } from "../../pki/keys.ts";
import { encodePem } from "../../pki/pem.ts";

const ECDSA_WITH_SHA256 = "1.2.840.10045.4.3.2";
const COMMON_NAME = "2.5.4.3";
const EXTENSION_REQUEST = "1.2.840.113549.1.9.14";

export async function makeCsr(keys: CryptoKeyPair, spiffeId: string, service: string): Promise<string> {
  const spki = new Uint8Array(await crypto.subtle.exportKey("spki", keys.publicKey));
  const subject = tlv(TAG.sequence, tlv(TAG.set, tlv(TAG.sequence, oid(COMMON_NAME), utf8String(service))));
  const uri = tlv(contextTag(6, false), new TextEncoder().encode(spiffeId));
  const san = tlv(TAG.sequence, oid(OID.san), tlv(TAG.octetString, tlv(TAG.sequence, uri)));
  const attributes = tlv(contextTag(0, true), tlv(TAG.sequence, oid(EXTENSION_REQUEST), tlv(TAG.set, tlv(TAG.sequence, san))));
  const info = tlv(TAG.sequence, tlv(TAG.integer, new Uint8Array([0])), subject, spki, attributes);
  const raw = new Uint8Array(await crypto.subtle.sign(EC_SIGN_ALG, keys.privateKey, info));
  const signature = ecdsaSignatureDer(raw);
  const csr = tlv(TAG.sequence, info, tlv(TAG.sequence, oid(ECDSA_WITH_SHA256)), bitString(signature));
  return encodePem("CERTIFICATE REQUEST", csr);
}

/** WebCrypto signs ECDSA as r‖s; X.509 carries ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }. */
function ecdsaSignatureDer(raw: Uint8Array): Uint8Array {
  const half = raw.length / 2;
  return tlv(TAG.sequence, unsignedInteger(raw.subarray(0, half)), unsignedInteger(raw.subarray(half)));
}
