/** The service name in a caller's SPIFFE ID, as a metric label. */
import { parseSpiffeId, workloadOf } from "../pki/spiffe.ts";

/** A proxy sees few identities, so each is parsed once, not per request. */
const peerServices = new Map<string, string>();
const MAX_PEERS = 1024;

export function peerService(spiffeId: string): string {
  let service = peerServices.get(spiffeId);
  if (service === undefined) {
    const parsed = parseSpiffeId(spiffeId);
    service = (parsed.ok && workloadOf(parsed.id)?.service) || "unknown";
    if (peerServices.size >= MAX_PEERS) peerServices.clear();
    peerServices.set(spiffeId, service);
  }
  return service;
}
