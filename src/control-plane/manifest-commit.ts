/**
 * Every manifest write, from any replica, is one Store.commit under one guard
 * (MANIFESTS_GUARD). A change is planned against this replica's view, which holds every
 * manifest write up to the guard revision it has applied, and committed on that revision:
 * if another write went in since (through another replica, whose view this one had not yet
 * caught), the commit is refused, the view catches up and the change is planned again. So
 * what a change was checked against is what it is written over, and two changes that are
 * each fine alone but break a rule together are never both stored.
 */
import { StoreError } from "../store/errors.ts";
import type { Store, WriteOp } from "../store/store.ts";
import { MANIFESTS_GUARD } from "./keys.ts";
import type { ControlPlaneView } from "./view.ts";

/** A change worked out against one state of the view: what to write (none: a refusal, or nothing changes), and the answer if it goes in. */
export interface Plan<T> {
  writes: WriteOp[];
  result: T;
}

export type CommitOutcome<T> =
  /** Written, or nothing to write, against the store's current manifests. */
  | { kind: "done"; result: T }
  /** Lost the race to other writers every time. */
  | { kind: "conflict"; error: string }
  /** The store's answer was lost: `result` may or may not hold. */
  | { kind: "unconfirmed"; result: T; error: StoreError };

/** Planned again after a lost race this many times before the change is refused. */
const ATTEMPTS = 5;
/** How long a replica waits for its view to apply the writes that beat it. */
const CATCH_UP_MS = 5_000;

export async function commitManifests<T>(store: Store, view: ControlPlaneView, plan: (view: ControlPlaneView) => Plan<T>): Promise<CommitOutcome<T>> {
  for (let attempt = 1; ; attempt++) {
    // Read together, with no await between: the plan sees exactly the state at `guard`.
    const guard = view.manifestsGuard;
    const { writes, result } = plan(view);
    let latest: number;
    if (writes.length > 0) {
      try {
        if (await store.commit({ key: MANIFESTS_GUARD, modRevision: guard }, writes)) return { kind: "done", result };
      } catch (err) {
        if (err instanceof StoreError && err.outcomeUnknown) return { kind: "unconfirmed", result, error: err };
        throw err;
      }
      latest = await guardRevision(store);
    } else {
      // A refusal or a no-op stands only if the view it was worked out on was current.
      latest = await guardRevision(store);
      if (latest <= guard) return { kind: "done", result };
    }
    if (attempt >= ATTEMPTS)
      return { kind: "conflict", error: `manifests changed through other replicas while this change was checked, ${ATTEMPTS} times over; nothing was applied: try again` };
    if (!(await view.seenGuard(latest, CATCH_UP_MS)))
      throw new StoreError("unavailable", `this replica's view of the manifests is behind the store (it holds writes up to revision ${view.manifestsGuard}, the store is at ${latest}) after ${CATCH_UP_MS} ms; nothing was applied`);
  }
}

async function guardRevision(store: Store): Promise<number> {
  return (await store.get(MANIFESTS_GUARD))?.modRevision ?? 0;
}
