/**
 * Reading identities out of certificates. Everything here works on the decoded
 * SubjectAlternativeName extension, never on a text rendering of it, so a crafted
 * name ("spiffe://a/x, URI:spiffe://b/y") cannot smuggle a second identity in.
 */
import type { Certificate } from "./certificate.ts";
import { formatSpiffeId, parseSpiffeId, type SpiffeId } from "./spiffe.ts";

/** Why a certificate carries no usable SPIFFE ID; a subset of the verifier's reasons. */
export type IdFailure = "no_uri_san" | "multiple_uri_sans" | "malformed_id" | "unsupported_cert";

export type LeafIdResult =
  | { ok: true; id: SpiffeId; spiffeId: string }
  | { ok: false; reason: IdFailure; detail: string };

/** Short human name for a certificate in error messages: its subject, else its URI SAN, else its serial. */
export function certName(cert: Certificate): string {
  if (cert.subject) return `"${cert.subject}"`;
  const uri = cert.known.san?.uris[0];
  if (uri !== undefined) return `<${JSON.stringify(uri).slice(1, -1)}>`;
  return `with serial ${cert.serialNumber}`;
}

/** The URI and DNS names of the SAN extension (empty lists when it is absent). */
export function sanNames(cert: Certificate): { ok: true; uris: string[]; dns: string[] } | { ok: false; detail: string } {
  if (cert.extensionProblem) return { ok: false, detail: cert.extensionProblem };
  return { ok: true, uris: cert.known.san?.uris ?? [], dns: cert.known.san?.dns ?? [] };
}

/**
 * The SPIFFE ID of a leaf SVID: exactly one URI SAN, a valid SPIFFE ID with a
 * non-root path (X509-SVID §2, §3.1). Does not check the chain; see verifyPeerChain.
 */
export function spiffeIdOfLeaf(cert: Certificate): LeafIdResult {
  const names = sanNames(cert);
  const who = certName(cert);
  if (!names.ok) return { ok: false, reason: "unsupported_cert", detail: `certificate ${who}: ${names.detail}` };
  const [uri, ...more] = names.uris;
  if (uri === undefined) {
    const dns = names.dns.length ? ` (it has only DNS names: ${names.dns.join(", ")})` : "";
    return { ok: false, reason: "no_uri_san", detail: `certificate ${who} has no URI SAN, so no SPIFFE ID${dns}` };
  }
  if (more.length)
    return {
      ok: false,
      reason: "multiple_uri_sans",
      detail: `certificate ${who} has ${names.uris.length} URI SANs; an X509-SVID must have exactly one`,
    };
  const parsed = parseSpiffeId(uri);
  if (!parsed.ok) return { ok: false, reason: "malformed_id", detail: `certificate ${who}: ${parsed.reason}` };
  if (parsed.id.path === "")
    return {
      ok: false,
      reason: "malformed_id",
      detail: `certificate ${who} has the trust-domain ID "${uri}"; a leaf SVID's ID must have a path`,
    };
  return { ok: true, id: parsed.id, spiffeId: formatSpiffeId(parsed.id) };
}
