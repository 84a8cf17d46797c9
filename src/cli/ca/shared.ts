/** Flags and checks the `mesh ca` commands share. */
import { DataError, UsageError } from "../../core/errors.ts";
import { MAX_LEAF_TTL_MS, MIN_LEAF_TTL_MS } from "../../ca/profiles.ts";
import { durationFlag } from "../flags.ts";
import { nameProblem, trustDomainProblem } from "../../pki/spiffe.ts";
import { str, strs, type FlagSpec, type Parsed } from "../args.ts";

export const CA_DIR_FLAG: FlagSpec = {
  name: "ca-dir",
  type: "string",
  value: "DIR",
  default: "certs",
  description: "The CA directory written by 'mesh ca init'.",
};
export const FORCE_FLAG: FlagSpec = { name: "force", type: "boolean", description: "Overwrite existing files, keys included." };

export const IDENTITY_FLAGS: FlagSpec[] = [
  { name: "service", type: "string", value: "NAME", required: true, description: "Service name: the 'sa' part of the SPIFFE ID." },
  { name: "namespace", type: "string", value: "NS", default: "default", description: "Namespace: the 'ns' part of the SPIFFE ID." },
  { name: "dns", type: "strings", value: "NAME", description: "A DNS name to add as a SAN." },
  { name: "ttl", type: "string", value: "DURATION", default: "24h", description: "Certificate lifetime, e.g. 1h, 24h, 720h (at least 1s, at most 30 days)." },
];

export interface Identity {
  service: string;
  namespace: string;
  dnsNames: string[];
  ttlMs: number;
}

const DNS_NAME = /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/;

export function identityFrom(args: Parsed): Identity {
  const service = str(args, "service")!;
  const namespace = str(args, "namespace")!;
  const bad = nameProblem("service", service) ?? undefined;
  if (bad) throw new UsageError(bad, "--service");
  const badNs = nameProblem("namespace", namespace);
  if (badNs) throw new UsageError(badNs, "--namespace");
  const dnsNames = strs(args, "dns");
  for (const d of dnsNames) if (!DNS_NAME.test(d)) throw new UsageError(`"${d}" is not a lowercase DNS name`, "--dns");
  return { service, namespace, dnsNames, ttlMs: leafTtlFlag(str(args, "ttl")!) };
}

/**
 * --ttl within the bounds issueLeaf holds every certificate to, checked here so a value out of
 * range is a usage error. At least a second: notAfter is kept in whole seconds, and a shorter
 * lifetime could end before the certificate is written.
 */
function leafTtlFlag(text: string): number {
  const ms = durationFlag(text, "--ttl");
  if (ms < MIN_LEAF_TTL_MS || ms > MAX_LEAF_TTL_MS)
    throw new UsageError(`expected a lifetime of at least ${MIN_LEAF_TTL_MS / 1000}s (a certificate's expiry is kept in whole seconds) and at most ${MAX_LEAF_TTL_MS / 3600_000}h, got "${text}"`, "--ttl");
  return ms;
}

export function checkTrustDomain(td: string): string {
  const bad = trustDomainProblem(td);
  if (bad) throw new UsageError(bad, "--trust-domain");
  return td;
}

export function formatRemaining(ms: number): string {
  if (ms <= 0) return "expired";
  const h = Math.floor(ms / 3600_000);
  const d = Math.floor(h / 24);
  if (d >= 2) return `${d}d ${h % 24}h`;
  const m = Math.floor((ms % 3600_000) / 60_000);
  return `${h}h ${m}m`;
}

export function assertNotExpired(notAfter: Date, what: string, where: string): void {
  if (notAfter.getTime() <= Date.now()) throw new DataError(`${what} expired at ${notAfter.toISOString()}`, where);
}
