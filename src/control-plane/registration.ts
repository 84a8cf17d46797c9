/** What a sidecar registers about itself, and how that is checked against who it is. */
import { z } from "zod";
import { Host, Port, Zone } from "../config/common.ts";
import { dnsLabel } from "../config/common.ts";

export const Registration = z.strictObject({
  namespace: dnsLabel("namespace"),
  service: dnsLabel("service"),
  address: Host,
  port: Port,
  weight: z.number().min(0).max(1_000_000).default(1),
  zone: Zone.optional(),
});
export type Registration = z.output<typeof Registration>;

/** The endpoint record kept in the store while the registering proxy's lease lives. */
export interface EndpointRecord extends Registration {
  /** SPIFFE ID of the proxy that registered it: only that identity may change it. */
  identity: string;
  /** Last health the proxy reported for its local service. */
  healthy: boolean;
  /** The certificate its last call proved (absent from records written by older replicas). */
  certificate?: HeldCertificate;
}

/**
 * A sidecar's certificate as its own mTLS connection proved it: the key that signed it
 * (authority key identifier, hex) and its end. Kept with its endpoint so that before a
 * root rotation is completed, every replica can name the sidecars still on an old signer.
 */
export interface HeldCertificate {
  issuerKeyId?: string;
  notAfter: string;
}

/** As stored: made only where a registration or heartbeat is written, not for every call on the API. */
export function heldCertificate(proven: { issuerKeyId?: string; notAfterMs: number } | undefined): HeldCertificate | undefined {
  return proven && { ...(proven.issuerKeyId !== undefined && { issuerKeyId: proven.issuerKeyId }), notAfter: new Date(proven.notAfterMs).toISOString() };
}

/** The longest refusal reason kept and shown: a proxy cuts what it sends to this. */
export const REFUSAL_REASON_CHARS = 2000;

/** Status of one proxy's subscription, as its acknowledgements tell it. */
export interface ProxyStatus {
  identity: string;
  namespace: string;
  service: string;
  endpoint?: string;
  /** Last version the proxy applied. */
  acked?: string;
  /** Last version it refused, and why. */
  rejected?: { version: string; reason: string };
  /** false: a proxy that refused its first config, so never registered (`endpoint` is where it would serve). */
  registered?: false;
  /** Services it subscribed to (undefined: every service). */
  calls?: string[];
  lastSeen: string;
}
