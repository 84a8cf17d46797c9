/** What both stores check of a `commit` before writing anything. */
import { StoreError } from "./errors.ts";
import type { CommitGuard, WriteOp } from "./store.ts";

export const opKey = (op: WriteOp): string => ("put" in op ? op.put : op.delete);

/** A key written twice in one commit (the guard included) has no one outcome: etcd refuses it too. */
export function checkCommitOps(guard: CommitGuard, ops: readonly WriteOp[]): void {
  const seen = new Set([guard.key]);
  for (const op of ops) {
    const key = opKey(op);
    if (seen.has(key)) throw new StoreError("rejected", `commit: key ${key} is written twice (the guard is ${guard.key})`);
    seen.add(key);
  }
}
