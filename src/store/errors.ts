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
  /** The data directory is held by another process. */
  | "locked"
  | "closed"
  /** A watch's onEvent threw; the watch ended so the caller's view is not silently wrong. */
  | "handler";

export class StoreError extends MeshError {
  override readonly name = "StoreError";
  constructor(
    readonly code: StoreErrorCode,
    message: string,
    /** For `compacted`: the oldest revision still available. */
    readonly compactRevision?: number,
    options?: { cause?: unknown },
  ) {
    super(message);
    if (options?.cause !== undefined) this.cause = options.cause;
  }
}
