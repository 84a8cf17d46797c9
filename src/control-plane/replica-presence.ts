/**
 * Each replica's record in the store, on a lease it keeps alive: who it is and which root
 * and intermediate it signs under. A root rotation waits for every replica to restart onto
 * the new root; a replica asked about the rotation knows only itself, so `mesh ca rotate
 * --complete` and `mesh check` read these (GET /v1/replicas) to see the others. A replica
 * that stops removes its record; one that dies leaves it until its lease lapses.
 */
import { hostname } from "node:os";
import { randomUUID } from "node:crypto";
import type { Logger } from "../core/log.ts";
import { ThrottledWarnings } from "../core/throttled-warnings.ts";
import { version } from "../core/version.ts";
import type { StoreError } from "../store/errors.ts";
import type { LeaseId, Store } from "../store/store.ts";
import { PREFIX, replicaKey } from "./keys.ts";

export interface ReplicaRecord {
  /** Unique to this run of the replica. */
  id: string;
  host: string;
  pid: number;
  version: string;
  startedAt: string;
  /** The mTLS API's address, as it listens. */
  api: string;
  /** Subject key identifiers (hex) of the root and intermediate it signs under. */
  rootKeyId?: string;
  intermediateKeyId?: string;
}

/** How long a dead replica's record outlives it; kept alive at a third of it. */
export const REPLICA_LEASE_MS = 15_000;

export class ReplicaPresence {
  readonly record: ReplicaRecord;
  private lease: LeaseId | undefined;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private stopped = false;
  private readonly warnings = new ThrottledWarnings(60_000);

  constructor(
    private readonly store: Store,
    self: Omit<ReplicaRecord, "id" | "host" | "pid" | "version" | "startedAt">,
    private readonly log: Logger,
    private readonly leaseMs = REPLICA_LEASE_MS,
  ) {
    this.record = { id: randomUUID(), host: hostname(), pid: process.pid, version, startedAt: new Date().toISOString(), ...self };
  }

  /** Writes the record, then keeps it: a store that fails now is tried again at each tick. */
  async start(): Promise<void> {
    await this.tick();
  }

  /** Removes the record (its lease) now. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.lease !== undefined) await this.store.revoke(this.lease).catch(() => {});
  }

  private async tick(): Promise<void> {
    try {
      // A lease that lapsed (the store was unreachable for longer than it) took the record with it: written again.
      if (this.lease !== undefined && !(await this.keptAlive(this.lease))) this.lease = undefined;
      if (this.lease === undefined) {
        const lease = (await this.store.grant(this.leaseMs)).id;
        await this.store.put(replicaKey(this.record.id), JSON.stringify(this.record), { lease });
        // Stopped meanwhile: stop() found no lease to revoke.
        if (this.stopped) return void (await this.store.revoke(lease).catch(() => {}));
        this.lease = lease;
      }
    } catch (err) {
      if (this.warnings.due("store")) this.log.warn({ err: (err as Error).message }, "this replica's record could not be written to the store; trying again");
    }
    if (!this.stopped) this.timer = setTimeout(() => void this.tick(), this.leaseMs / 3);
  }

  private async keptAlive(lease: LeaseId): Promise<boolean> {
    try {
      await this.store.keepAlive(lease);
      return true;
    } catch (err) {
      if ((err as StoreError).code === "lease-not-found") return false;
      throw err;
    }
  }
}

/** Every replica whose record is in the store; records that do not parse are passed over. */
export async function listReplicas(store: Store): Promise<ReplicaRecord[]> {
  const { kvs } = await store.list(PREFIX.replicas);
  return kvs.flatMap((kv) => {
    try {
      return [JSON.parse(kv.value) as ReplicaRecord];
    } catch {
      return [];
    }
  });
}

/**
 * Replicas alive that sign under another root than `rootKeyId` (the CA directory's), but
 * `except` (one already spoken of): one sentence each, saying what to do.
 */
export function replicasUnderOtherRoots(replicas: ReplicaRecord[], rootKeyId: string | undefined, except?: string): string[] {
  return replicas
    .filter((r) => r.id !== except && r.rootKeyId !== rootKeyId)
    .map((r) => `the control plane replica on ${r.host} (pid ${r.pid}, API ${r.api}, up since ${r.startedAt}) signs under another root than the CA directory's: restart it, then let its sidecars renew (a replica that is gone leaves its record for ${REPLICA_LEASE_MS / 1000} s)`);
}
