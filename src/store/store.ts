/**
 * The control plane's storage: a small key-value model shaped like etcd's, so the same
 * callers run on the embedded store (one process, bun:sqlite) and on an etcd cluster (HA).
 *
 * Every change gets the next store revision; each key remembers the revision that created
 * it and the one that last changed it. Values are strings (callers store JSON). Keys may be
 * attached to a lease and vanish when it lapses. A watch replays history from a revision,
 * so the pattern "list, then watch from list.revision + 1" misses nothing.
 */
import type { StoreError } from "./errors.ts";

/** Lease IDs are strings: etcd's are 64-bit and do not fit a JavaScript number. */
export type LeaseId = string;

export interface KeyValue {
  key: string;
  value: string;
  /** Revision of the put that created the key (since its last delete). */
  createRevision: number;
  /** Revision of the last put: what `putIfVersion` compares against. */
  modRevision: number;
  /** Puts since creation: 1 for a new key. */
  version: number;
  lease?: LeaseId;
}

export interface ListResult {
  /** Sorted by key. */
  kvs: KeyValue[];
  /** The store revision this list reflects: watch from `revision + 1` to miss nothing. */
  revision: number;
}

export type WatchEvent =
  | { type: "put"; key: string; value: string; revision: number; kv: KeyValue }
  | { type: "delete"; key: string; revision: number };

export interface WatchHandlers {
  /** Events arrive once each, in revision order (one revision may carry several events). */
  onEvent(ev: WatchEvent): void;
  /**
   * The watch has ended and delivers nothing more: `compacted` (history before the
   * requested revision is gone: re-list and watch again), `closed` (the store closed) or
   * `handler` (onEvent threw). Never called after the caller cancels.
   */
  onError(err: StoreError): void;
  /**
   * The watch lost its connection and is reopening (etcd: a member failed or was cut off):
   * changes may have been made that have not arrived, and will arrive in order once it is
   * back, with no sign of when they all have. Said once per loss.
   */
  onInterrupted?(reason: string): void;
}

export interface PutOptions {
  /** The key is deleted when this lease expires or is revoked. */
  lease?: LeaseId;
}

/** One write of a `commit`. */
export type WriteOp = { put: string; value: string } | { delete: string };

/** What a `commit` is conditional on: `key`'s modRevision is still `modRevision` (0: the key is absent). */
export interface CommitGuard {
  key: string;
  modRevision: number;
}

export interface LeaseGrant {
  id: LeaseId;
  /** The TTL the store granted; may exceed the request (etcd rounds up to whole seconds and a minimum). */
  ttlMs: number;
}

export interface Store {
  get(key: string): Promise<KeyValue | undefined>;
  /** Every key starting with `prefix` ("" lists everything). */
  list(prefix: string): Promise<ListResult>;
  /** Returns the revision of the write. */
  put(key: string, value: string, opts?: PutOptions): Promise<number>;
  /** Creates the key only if it does not exist; false if it does. */
  putIfAbsent(key: string, value: string, opts?: PutOptions): Promise<boolean>;
  /** Writes only if the key's modRevision is still `modRevision` (0: the key is absent); false otherwise. */
  putIfVersion(key: string, value: string, modRevision: number, opts?: PutOptions): Promise<boolean>;
  /** False if there was no such key. */
  delete(key: string): Promise<boolean>;
  /**
   * Applies every op and rewrites the guard key, all at one revision, if the guard's
   * modRevision is unchanged; false (nothing written) otherwise. Writers that all commit under
   * one guard exclude one another: whatever one validated against is what it writes over.
   * The guard gets a value unique to this commit (how a commit whose answer was lost tells
   * its own write from another's). Deleting an absent key is no error. A commit larger than
   * the store takes in one transaction fails `too-large`, nothing written.
   */
  commit(guard: CommitGuard, ops: WriteOp[]): Promise<boolean>;

  grant(ttlMs: number): Promise<LeaseGrant>;
  /** Restarts the lease's TTL; returns it. Throws StoreError `lease-not-found` once it has lapsed. */
  keepAlive(id: LeaseId): Promise<number>;
  /** Ends the lease now and deletes its keys. A lease that already lapsed is not an error. */
  revoke(id: LeaseId): Promise<void>;

  /** The current store revision; it only grows. */
  revision(): Promise<number>;
  /**
   * Calls `handlers.onEvent` for each change under `prefix` with revision >= `fromRevision`
   * (default: changes after the watch starts). Returns a function that cancels the watch.
   */
  watch(prefix: string, handlers: WatchHandlers, fromRevision?: number): () => void;
  /** Discards history before `revision`; watches from earlier revisions then fail `compacted`. */
  compact(revision: number): Promise<void>;
  /** Ends every watch (`closed`) and releases the store; later calls throw `closed`. */
  close(): Promise<void>;
}
