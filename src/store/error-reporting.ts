/**
 * A store that tells `onError` of every failure its callers meet, whichever the implementation
 * (the embedded store's disk errors too), so a replica's status can show the last one. Every
 * method is wrapped, any added to `Store` later included, so none goes unreported.
 */
import { StoreError, type StoreErrorCode } from "./errors.ts";
import type { Store } from "./store.ts";

/**
 * Answers, not faults of the store: a lapsed lease, compacted history and a closed store are
 * the protocol working; a request past the store's size limits is the caller's to split.
 */
const NOT_FAULTS: ReadonlySet<StoreErrorCode> = new Set(["lease-not-found", "compacted", "closed", "too-large"]);

function isStoreFault(err: unknown): boolean {
  return !(err instanceof StoreError && NOT_FAULTS.has(err.code));
}

export function reportingErrors<S extends Store>(store: S, onError: (err: unknown) => void): S {
  const seen = (err: unknown): never => {
    if (isStoreFault(err)) onError(err);
    throw err;
  };
  return new Proxy(store, {
    get(target, prop) {
      const value: unknown = Reflect.get(target, prop, target);
      if (typeof value !== "function") return value;
      return (...args: unknown[]) => {
        try {
          const result: unknown = value.apply(target, args);
          return result instanceof Promise ? result.catch(seen) : result;
        } catch (err) {
          return seen(err);
        }
      };
    },
  });
}
