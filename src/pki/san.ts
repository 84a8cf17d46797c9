/**
 * Reading identities out of certificates. Everything here works on the parsed
 * SubjectAlternativeName extension, never on a text rendering of it, so a crafted
 * name ("spiffe://a/x, URI:spiffe://b/y") cannot smuggle a second identity in.
 */
import { x509 } from "./x509.ts";
import { formatSpiffeId, parseSpiffeId, type SpiffeId } from "./spiffe.ts";

type Cert = x509.X509Certificate;

/** Why a certificate carries no usable SPIFFE ID; a subset of the verifier's reasons. */
export type IdFailure = "no_uri_san" | "multiple_uri_sans" | "malformed_id" | "unsupported_cert";

export type LeafIdResult =
  | { ok: true; id: SpiffeId; spiffeId: string }
  | { ok: false; reason: IdFailure; detail: string };

/** Short human name for a certificate in error messages: its subject, else its URI SAN, else its serial. */
export function certName(cert: Cert): string {
  try {
    if (cert.subject) return `"${cert.subject}"`;
    const uris = sanNames(cert);
    if (uris.ok && uris.uris[0]) return `<${uris.uris[0]}>`;
  } catch {
    // Fall through: naming must never throw while reporting another problem.
  }
  return `with serial ${cert.serialNumber}`;
}

/**
 * All extensions of a certificate, or why they cannot be read. @peculiar/x509 parses
 * every extension at first access and throws on a malformed value, so callers must
 * treat that as a result. (SAN entries it cannot render, such as unknown otherNames,
 * are skipped rather than thrown on; a URI entry is never skipped.)
 */
export function extensionsOf(cert: Cert): { ok: true; extensions: x509.Extension[] } | { ok: false; detail: string } {
  try {
    const extensions = cert.extensions;
    const seen = new Set<string>();
    for (const ext of extensions) {
      // RFC 5280 §4.2: at most one instance of each extension. Two SANs could hide a second URI.
      if (seen.has(ext.type)) return { ok: false, detail: `it has the extension ${ext.type} more than once` };
      seen.add(ext.type);
    }
    return { ok: true, extensions };
  } catch (err) {
    return { ok: false, detail: `its extensions cannot be parsed (${err instanceof Error ? err.message : String(err)})` };
  }
}

/** The URI and DNS names of the SAN extension (empty lists when it is absent). */
export function sanNames(cert: Cert): { ok: true; uris: string[]; dns: string[] } | { ok: false; detail: string } {
  const exts = extensionsOf(cert);
  if (!exts.ok) return exts;
  const san = exts.extensions.find((e) => e instanceof x509.SubjectAlternativeNameExtension);
  if (!san) return { ok: true, uris: [], dns: [] };
  const items = (san as x509.SubjectAlternativeNameExtension).names.items;
  return {
    ok: true,
    uris: items.filter((n) => n.type === "url").map((n) => n.value),
    dns: items.filter((n) => n.type === "dns").map((n) => n.value),
  };
}

/**
 * The SPIFFE ID of a leaf SVID: exactly one URI SAN, a valid SPIFFE ID with a
 * non-root path (X509-SVID §2, §3.1). Does not check the chain; see verifyPeerChain.
 */
export function spiffeIdOfLeaf(cert: Cert): LeafIdResult {
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
