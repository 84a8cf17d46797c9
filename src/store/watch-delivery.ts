/** Handing events to a watcher, shared by both stores so a throwing handler ends a watch the same way. */
import { StoreError } from "./errors.ts";
import type { WatchEvent, WatchHandlers } from "./store.ts";

/**
 * Calls onEvent. If it throws, returns the error to end the watch with: carrying on would
 * leave the caller's view silently missing an event.
 */
export function deliver(handlers: WatchHandlers, ev: WatchEvent): StoreError | undefined {
  try {
    handlers.onEvent(ev);
    return undefined;
  } catch (err) {
    return new StoreError("handler", `watch handler failed on ${ev.type} ${ev.key} at revision ${ev.revision}`, undefined, { cause: err });
  }
}

/** onError must not break the store's own loop either; what it throws is the caller's to see, later. */
export function reportEnd(handlers: WatchHandlers, err: StoreError): void {
  try {
    handlers.onError(err);
  } catch (thrown) {
    queueMicrotask(() => {
      throw thrown;
    });
  }
}
