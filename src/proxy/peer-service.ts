/** The service name in a caller's SPIFFE ID, as a metric label. */
import { boundedMemo } from "../core/bounded-memo.ts";
import { parseSpiffeId, workloadOf } from "../pki/spiffe.ts";

/** A proxy sees few identities, so each is parsed once, not per request. */
export const peerService = boundedMemo(1024, (spiffeId: string): string => {
  const parsed = parseSpiffeId(spiffeId);
  return (parsed.ok && workloadOf(parsed.id)?.service) || "unknown";
});
