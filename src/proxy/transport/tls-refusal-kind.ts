/**
 * Why a TLS peer was refused, as one of a few kinds: the label of
 * mesh_tls_failures_total and the key its warnings are said once per 10 s by. The reasons
 * come from the TLS library (its error text, or its code name) and from peer-identity.ts;
 * the kinds are few, whatever a peer sends, so neither the series nor the warnings grow
 * with what peers present.
 */
import { ThrottledWarnings } from "../../core/throttled-warnings.ts";
import type { Logger } from "../../core/log.ts";
import type { ProxyMetrics } from "../metrics.ts";
import type { PeerRefusalObserver } from "./dial.ts";

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

/** The inbound listener's refusals: counted by kind, and each kind said at most once per 10 s (a rotation gone wrong, or an impostor). */
export function inboundRefusals(metrics: ProxyMetrics, log: Logger): (reason: string) => void {
  const warnings = new ThrottledWarnings();
  return (reason) => {
    const kind = tlsRefusalKind(reason);
    metrics.tlsFailures.inc({ direction: "inbound", reason: kind });
    if (warnings.due(kind)) log.warn({ kind, reason }, "refused an inbound TLS peer (more like it within 10 s are counted in mesh_tls_failures_total only)");
  };
}

/**
 * Upstreams whose certificate or identity a dial refused (dial.ts), whatever rides the
 * connection: counted as peer-identity, and each endpoint said at most once per 10 s. The
 * caller gets only a 502 (or a closed connection, over carried TCP); the warning says why.
 */
export function outboundRefusals(metrics: ProxyMetrics, log: Logger): PeerRefusalObserver {
  const warnings = new ThrottledWarnings();
  return (endpoint, refusal) => {
    metrics.tlsFailures.inc({ direction: "outbound", reason: "peer-identity" });
    if (warnings.due(endpoint)) log.warn({ endpoint, reason: refusal.message }, "refused an upstream's certificate: nothing was sent to it (more within 10 s are counted in mesh_tls_failures_total only)");
  };
}
