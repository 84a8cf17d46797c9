/**
 * The SPIFFE ID of a TLS peer, read from its parsed leaf certificate after the TLS
 * layer has verified the chain against the trust bundle. Synchronous, because both
 * places that call it (a TLS handshake callback and fetch's checkServerIdentity)
 * must decide before any byte flows.
 */
import { Certificate } from "../pki/certificate.ts";
import { spiffeIdOfLeaf } from "../pki/san.ts";

/** `notAfterMs`: the leaf's end of validity (epoch ms); a connection it proved must not outlive it (transport/credential-expiry.ts). */
export type PeerId = { ok: true; spiffeId: string; trustDomain: string; notAfterMs: number } | { ok: false; reason: string };

/**
 * Verdicts by certificate bytes. The verdict depends on nothing but the DER and the trust
 * domain (validity times and the chain are the TLS layer's, checked on every handshake),
 * so every new connection from a known peer is decided by one map lookup instead of
 * a parse. Bounded; the oldest entry goes first.
 */
const verdicts = new Map<string, PeerId>();
const MAX_VERDICTS = 4096;

/** SPIFFE leaf rules the TLS library does not enforce: CA=false and exactly one valid URI SAN. */
export function peerIdFromDer(der: Uint8Array<ArrayBuffer>, trustDomain: string): PeerId {
  const key = `${trustDomain} ${Buffer.from(der.buffer, der.byteOffset, der.byteLength).toString("base64")}`;
  const known = verdicts.get(key);
  if (known) return known;
  const verdict = parsePeerId(der, trustDomain);
  if (verdicts.size >= MAX_VERDICTS) verdicts.delete(verdicts.keys().next().value!);
  verdicts.set(key, verdict);
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
  return { ok: true, spiffeId: id.spiffeId, trustDomain: id.id.trustDomain, notAfterMs: cert.notAfter.getTime() };
}
