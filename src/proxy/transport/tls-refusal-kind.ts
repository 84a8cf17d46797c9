/**
 * Why a TLS peer was refused, as one of a few kinds: the label of
 * mesh_tls_failures_total and the key its warnings are said once per 10 s by. The reasons
 * come from the TLS library (its error text, or its code name) and from peer-identity.ts;
 * the kinds are few, whatever a peer sends, so neither the series nor the warnings grow
 * with what peers present.
 */
export type TlsRefusalKind = "no-certificate" | "untrusted" | "expired" | "not-yet-valid" | "trust-domain" | "not-a-workload-certificate" | "handshake";

const KINDS: [RegExp, TlsRefusalKind][] = [
  [/PEER_DID_NOT_RETURN_A_CERTIFICATE|no client certificate|certificate required/i, "no-certificate"],
  [/expired/i, "expired"],
  [/not valid before|not yet valid/i, "not-yet-valid"],
  [/unable to get (local )?issuer|self.signed|unknown ca|CERTIFICATE_VERIFY_FAILED|certificate signature failure|unable to verify/i, "untrusted"],
  [/trust domain/i, "trust-domain"],
  [/SAN|SPIFFE|CA=true|unparseable peer certificate|malformed|unsupported/i, "not-a-workload-certificate"],
];

export function tlsRefusalKind(reason: string): TlsRefusalKind {
  for (const [pattern, kind] of KINDS) if (pattern.test(reason)) return kind;
  return "handshake";
}
