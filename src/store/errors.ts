/** Store failures callers act on, told apart by `code` rather than by message text. */
import { MeshError } from "../core/errors.ts";

export type StoreErrorCode =
  /** The watch asked for history that was compacted away: re-list, then watch from the list's revision + 1. */
  | "compacted"
  /** The lease lapsed or was revoked: register again with a new lease. */
  | "lease-not-found"
  /** No store member answered in time. */
  | "unavailable"
  /** The store refused the request (bad argument, value too large, …). */
  | "rejected"
  /** More than the store takes in one transaction (etcd: --max-txn-ops, --max-request-bytes); nothing was written. */
  | "too-large"
  /** etcd is out of space (its NOSPACE alarm): every write is refused, none applied, until an operator frees space (NO_SPACE_REMEDY). */
  | "no-space"
  /** The data directory is held by another process. */
  | "locked"
  | "closed"
  /** A watch's onEvent threw; the watch ended so the caller's view is not silently wrong. */
  | "handler";

export class StoreError extends MeshError {
  override readonly name = "StoreError";
  /** A write that failed `unavailable` after its request may have reached the store: it may have been applied all the same. */
  readonly outcomeUnknown: boolean;
  constructor(
    readonly code: StoreErrorCode,
    message: string,
    /** For `compacted`: the oldest revision still available. */
    readonly compactRevision?: number,
    options?: { cause?: unknown; outcomeUnknown?: boolean },
  ) {
    super(message);
    if (options?.cause !== undefined) this.cause = options.cause;
    this.outcomeUnknown = options?.outcomeUnknown === true;
  }
}

/** What an operator does about `no-space`: what etcd's maintenance guide prescribes, as etcdctl commands. */
export const NO_SPACE_REMEDY =
  "free etcd's space: compact its history ('etcdctl compact <revision>', the revision from 'etcdctl endpoint status -w json'), " +
  "defragment every member ('etcdctl defrag --cluster'), then disarm the alarm ('etcdctl alarm disarm'); " +
  "if live data alone fills the quota, raise etcd's --quota-backend-bytes first";
