/**
 * Before `mesh ca rotate --complete` drops the old roots: ask a running control plane
 * whether that would lock anyone out. A sidecar whose certificate chains to a dropped root
 * can no longer be verified by its peers, nor renew (its control-plane connection is cut
 * at once, README "Root rotation, live"), and a replica still signing under the old root
 * would go on minting such certificates. Sidecars are read from the store's endpoints, so
 * every replica's are seen, each with the certificate its own connection last proved.
 */
import { asCertificate, type LoadedCa } from "../../ca/authority.ts";
import { signersOf } from "../../ca/signers-under-root.ts";
import type { ControlPlaneStatus } from "../../control-plane/api/admin-api.ts";
import type { EndpointRecord } from "../../control-plane/registration.ts";
import { replicasUnderOtherRoots, type ReplicaRecord } from "../../control-plane/replica-presence.ts";
import { sidecarCertificates, wouldLockOut } from "../../control-plane/sidecar-certificates.ts";
import { MeshError } from "../../core/errors.ts";
import type { AdminClient } from "../admin-client.ts";

/** What stands in the way of completing, one reason per line; empty when nothing does. */
export async function completionBlockers(ca: LoadedCa, client: AdminClient): Promise<string[]> {
  const status = await read<ControlPlaneStatus>(client, "/v1/status");
  if (status.trustDomain !== ca.trustDomain)
    return [`the control plane at ${client.url} serves trust domain "${status.trustDomain}", and ${ca.paths.dir} is the CA of "${ca.trustDomain}": ask a control plane that signs from this directory (--admin-url)`];
  const blockers: string[] = [];
  if (status.ca.rootReplaced) blockers.push(`the control plane at ${client.url} still signs under the old root: restart each replica, then let every sidecar renew`);
  if (status.ca.bundleError !== undefined) blockers.push(`the control plane at ${client.url} refused ${ca.paths.bundle}: ${status.ca.bundleError}`);
  // Its list of sidecars is its view of the store: one that stopped following it may miss some.
  if (status.view?.synced === false) blockers.push(`the control plane at ${client.url} has not followed its store since ${status.view.staleSince}, so its list of sidecars may be out of date: ${status.view.error ?? "see its log"}`);
  blockers.push(...(await replicasOnOtherRoots(ca, client, status.ca.rootReplaced ? status.replica : undefined)));
  const { items } = await read<{ items: EndpointRecord[] }>(client, "/v1/endpoints");
  blockers.push(...wouldLockOut(sidecarCertificates(items, signersOf(ca))));
  return blockers;
}

/** Every other replica alive (its record in the store) that signs under another root than the directory's: each needs its restart first. */
async function replicasOnOtherRoots(ca: LoadedCa, client: AdminClient, saidAlready: string | undefined): Promise<string[]> {
  const r = await client.call<{ items?: ReplicaRecord[]; error?: string }>("GET", "/v1/replicas");
  // A control plane older than replica records: only the one asked can be judged (above).
  if (r.status === 404) return [];
  // Not a failure of the question: unanswered, it stands in the way like any other reason (an etcd outage, say).
  if (r.status !== 200 || r.body.items === undefined) return [`the control plane at ${client.url} could not list the replicas (${r.status}): ${r.body.error ?? "no reason given"}`];
  return replicasUnderOtherRoots(r.body.items, asCertificate(ca.root).known.subjectKeyId, saidAlready);
}

async function read<T>(client: AdminClient, path: string): Promise<T> {
  const r = await client.call<T & { error?: string }>("GET", path);
  if (r.status !== 200) throw new MeshError(`${client.url}${path} answered ${r.status}: ${r.body.error ?? "no reason given"}`);
  return r.body;
}
