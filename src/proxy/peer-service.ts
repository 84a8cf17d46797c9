/** The namespace and service in a caller's SPIFFE ID: for metric labels and policies' caller rules. */
import { boundedMemo } from "../core/bounded-memo.ts";
import { parseSpiffeId, workloadOf } from "../pki/spiffe.ts";

/** A proxy sees few identities, so each is parsed once, not per request; null for an ID that names no workload (a memo keeps no undefined). */
export const callerWorkload = boundedMemo(1024, (spiffeId: string): { namespace: string; service: string } | null => {
  const parsed = parseSpiffeId(spiffeId);
  return (parsed.ok && workloadOf(parsed.id)) || null;
});

/** The service name in a caller's SPIFFE ID, as a metric label. */
export const peerService = (spiffeId: string): string => callerWorkload(spiffeId)?.service || "unknown";
