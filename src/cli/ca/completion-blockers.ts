/**
 * Before `mesh ca rotate --complete` drops the old roots: ask a running control plane
 * whether that would lock anyone out. A sidecar whose certificate chains to a dropped root
 * can no longer be verified by its peers, nor renew (its control-plane connection is cut
 * at once, README "Root rotation, live"), and a replica still signing under the old root
 * would go on minting such certificates. Sidecars are read from the store's endpoints, so
 * every replica's are seen, each with the certificate its own connection last proved.
 */
import type { LoadedCa } from "../../ca/authority.ts";
import { signerKeyIdsUnderRoot } from "../../ca/signers-under-root.ts";
import type { ControlPlaneStatus } from "../../control-plane/api/admin-api.ts";
import type { EndpointRecord } from "../../control-plane/registration.ts";
import { MeshError } from "../../core/errors.ts";
import type { AdminClient } from "../admin-client.ts";

/** At most this many sidecars are named; the rest are counted. */
const NAMED = 10;

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
  const { items } = await read<{ items: EndpointRecord[] }>(client, "/v1/endpoints");
  blockers.push(...sidecarBlockers(ca, items));
  return blockers;
}

function sidecarBlockers(ca: LoadedCa, endpoints: EndpointRecord[]): string[] {
  const underRoot = signerKeyIdsUnderRoot(ca);
  const now = Date.now();
  const off: string[] = [];
  const unknown: string[] = [];
  for (const e of endpoints) {
    const who = `${e.namespace}/${e.service} at ${e.address}:${e.port}`;
    const held = e.certificate;
    if (held === undefined) unknown.push(who);
    else if (Date.parse(held.notAfter) > now && (held.issuerKeyId === undefined || !underRoot.has(held.issuerKeyId))) off.push(`${who} (certificate until ${held.notAfter})`);
  }
  const lines: string[] = [];
  if (off.length) lines.push(`${sidecars(off.length, "holds", "hold")} a certificate that does not chain to the current root; wait for them to renew (at about half their certificate's life): ${named(off)}`);
  if (unknown.length) lines.push(`${sidecars(unknown.length, "was", "were")} registered through a control plane that does not record certificates, so which root they are on cannot be told: ${named(unknown)}`);
  return lines;
}

function sidecars(n: number, one: string, many: string): string {
  return n === 1 ? `1 sidecar ${one}` : `${n} sidecars ${many}`;
}

function named(list: string[]): string {
  return list.length > NAMED ? `${list.slice(0, NAMED).join(", ")} and ${list.length - NAMED} more` : list.join(", ");
}

async function read<T>(client: AdminClient, path: string): Promise<T> {
  const r = await client.call<T & { error?: string }>("GET", path);
  if (r.status !== 200) throw new MeshError(`${client.url}${path} answered ${r.status}: ${r.body.error ?? "no reason given"}`);
  return r.body;
}
