/**
 * The SPIFFE ID of a TLS peer, read from its parsed leaf certificate after the TLS
 * layer has verified the chain against the trust bundle. Synchronous, because both
 * places that call it (a TLS handshake callback and fetch's checkServerIdentity)
 * must decide before any byte flows.
 */
import { Certificate } from "../pki/certificate.ts";
import { spiffeIdOfLeaf } from "../pki/san.ts";

/**
 * `notBeforeMs`, `notAfterMs`: the leaf's validity (epoch ms); a connection it proved must
 * not outlive it (transport/credential-expiry.ts). `issuerKeyId`: the key that signed it
 * (authority key identifier, hex), which tells a leaf of the current intermediate from one
 * of an earlier, during a rotation.
 */
export type PeerId =
  | { ok: true; spiffeId: string; trustDomain: string; notBeforeMs: number; notAfterMs: number; issuerKeyId: string | undefined }
  | { ok: false; reason: string };

/**
 * Verdicts by certificate bytes. The verdict depends on nothing but the DER and the trust
 * domain (the chain is the TLS layer's, checked on every full handshake), so every new
 * connection from a known peer is decided by one map lookup instead of a parse. Bounded;
 * the oldest entry goes first.
 */
const verdicts = new Map<string, PeerId>();
const MAX_VERDICTS = 4096;

/**
 * SPIFFE leaf rules the TLS library does not enforce (CA=false and exactly one valid URI
 * SAN), and the leaf's validity at `nowMs`: a resumed TLS session carries the certificate
 * of its first handshake and is checked against no clock, so a peer whose certificate has
 * expired since would otherwise be let in on it.
 */
export function peerIdFromDer(der: Uint8Array<ArrayBuffer>, trustDomain: string, nowMs = Date.now()): PeerId {
  const key = `${trustDomain} ${Buffer.from(der.buffer, der.byteOffset, der.byteLength).toString("base64")}`;
  let verdict = verdicts.get(key);
  if (verdict === undefined) {
    verdict = parsePeerId(der, trustDomain);
    if (verdicts.size >= MAX_VERDICTS) verdicts.delete(verdicts.keys().next().value!);
    verdicts.set(key, verdict);
  }
  if (!verdict.ok) return verdict;
  if (nowMs >= verdict.notAfterMs) return { ok: false, reason: `peer certificate ${verdict.spiffeId} expired at ${new Date(verdict.notAfterMs).toISOString()}` };
  if (nowMs < verdict.notBeforeMs) return { ok: false, reason: `peer certificate ${verdict.spiffeId} is not valid before ${new Date(verdict.notBeforeMs).toISOString()}` };
  return verdict;
}

function parsePeerId(der: Uint8Array<ArrayBuffer>, trustDomain: string): PeerId {
  let cert: Certificate;
  try {
    cert = Certificate.fromDer(der);
  } catch (err) {
    return { ok: false, reason: `unparseable peer certificate: ${(err as Error).message}` };
  }
  if (cert.known.basicConstraints?.ca) return { ok: false, reason: "peer leaf has CA=true" };
  const id = spiffeIdOfLeaf(cert);
  if (!id.ok) return { ok: false, reason: `${id.reason}: ${id.detail}` };
  if (id.id.trustDomain !== trustDomain)
    return { ok: false, reason: `peer is in trust domain ${id.id.trustDomain}, expected ${trustDomain}` };
  return {
    ok: true,
    spiffeId: id.spiffeId,
    trustDomain: id.id.trustDomain,
    notBeforeMs: cert.notBefore.getTime(),
    notAfterMs: cert.notAfter.getTime(),
    issuerKeyId: cert.known.authorityKeyId,
  };
}
