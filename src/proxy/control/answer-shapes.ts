/**
 * The shapes of the control plane's answers, checked before anything reads their fields:
 * an answer of another shape (a broken replica, a proxy in the way, a version skew) is
 * then refused with what is wrong in it, rather than with whatever engine error reading a
 * missing field raises deep inside the sidecar.
 */
import { z } from "zod";
import { check } from "../../config/issues.ts";
import type { SignedCertificate } from "../../control-plane/signer.ts";
import { MeshError } from "../../core/errors.ts";

const Version = z.string().min(1).max(256);

/** Loose objects: fields a newer control plane adds are ignored. */
const Snapshot = z.object({ version: Version, documents: z.array(z.unknown()), bundle: z.string().optional() });
const Versioned = z.object({ version: Version });

export type ConfigAnswer =
  | { kind: "snapshot"; version: string; documents: unknown[]; bundle: string | undefined }
  /** Not a snapshot, but naming a version: refused, and acknowledged as such. */
  | { kind: "refused"; version: string; reason: string }
  /** Not a snapshot, naming no version that could be acknowledged. */
  | { kind: "unnamed"; reason: string };

export function readConfigAnswer(answer: unknown): ConfigAnswer {
  const snap = check(Snapshot, answer);
  if (snap.ok) return { kind: "snapshot", version: snap.value.version, documents: snap.value.documents, bundle: snap.value.bundle };
  const reason = `the control plane's answer is not a config snapshot: ${issuesText(snap.issues)}`;
  const named = check(Versioned, answer);
  return named.ok ? { kind: "refused", version: named.value.version, reason } : { kind: "unnamed", reason };
}

/** A lease shorter than the control plane's own minimum (1 s, ca/lifetimes.ts) would make heartbeats (at a third of it) a hot loop. */
export const MIN_LEASE_TTL_MS = 1_000;
/** Heartbeats carry the workload's health: a long lease must not make them rarer than every 100 s. */
export const MAX_LEASE_TTL_MS = 300_000;

const LeaseAnswer = z.object({ leaseId: z.string().min(1).max(256), ttlMs: z.number() });

/** A registration's lease, its TTL clamped to what heartbeats can sensibly follow. */
export function readLease(answer: unknown): { leaseId: string; ttlMs: number } {
  const lease = check(LeaseAnswer, answer);
  if (!lease.ok) throw new Error(`/v1/register: the control plane's answer is not a lease: ${issuesText(lease.issues)}`);
  const ttl = Number.isFinite(lease.value.ttlMs) ? lease.value.ttlMs : MIN_LEASE_TTL_MS;
  return { leaseId: lease.value.leaseId, ttlMs: Math.min(Math.max(ttl, MIN_LEASE_TTL_MS), MAX_LEASE_TTL_MS) };
}

/** Generous bounds on PEM text: a chain of a few certificates, a bundle of a few trust domains' roots. */
const Pem = z.string().min(1).max(1 << 20);
const Signed = z.object({ chain: Pem, bundle: Pem });

/** A bootstrap or renewal answer; which identity it carries is read from the certificate, never from its `spiffeId` field. */
export function readSignedCertificate(answer: unknown, path: string): Pick<SignedCertificate, "chain" | "bundle"> {
  const signed = check(Signed, answer);
  if (!signed.ok) throw new MeshError(`${path}: the control plane's answer is not a signed certificate: ${issuesText(signed.issues)}`);
  return signed.value;
}

function issuesText(issues: { path: string; message: string }[]): string {
  return issues
    .slice(0, 5)
    .map((i) => `${i.path || "answer"}: ${i.message}`)
    .join("; ");
}
