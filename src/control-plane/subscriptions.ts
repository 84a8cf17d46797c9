/**
 * Config distribution by long poll: a proxy asks with the version it has; the answer
 * comes at once if its snapshot differs, or as soon as a change makes it differ, or
 * after `waitMs` with nothing new. Resuming after a disconnect is the same question, so
 * a proxy that reconnects (to any replica) gets exactly what it missed, or nothing.
 */
import { snapshotFor, type ProxySnapshot, type Subscriber } from "./snapshot.ts";
import type { ControlPlaneView } from "./view.ts";

/** A snapshot and its JSON, computed once per subscriber view and content revision, then shared. */
export interface CachedSnapshot {
  snapshot: ProxySnapshot;
  json: string;
}

/**
 * Snapshots kept: each distinct view (service and the services it calls) is one entry. An
 * entry of an older revision, or past the cap (the least recently built first), is dropped:
 * the cache saves work, it never holds what a caller could grow without bound.
 */
const MAX_CACHED = 1024;

interface Waiter {
  sub: Subscriber;
  known: string | undefined;
  resolve(s: CachedSnapshot | undefined): void;
}

export class Subscriptions {
  private waiters = new Set<Waiter>();
  private cache = new Map<string, CachedSnapshot & { revision: number; bundle: string }>();

  constructor(private view: ControlPlaneView, private bundle: () => string) {
    view.onChange(() => this.wake());
  }

  /**
   * Many proxies share a view (same service, same calls): without the cache, every
   * poll and every change would rebuild and re-serialize the same snapshot per proxy.
   */
  cached(sub: Subscriber): CachedSnapshot {
    const key = `${sub.namespace}\0${sub.service}\0${sub.calls?.join(",") ?? "*"}`;
    const bundle = this.bundle();
    const hit = this.cache.get(key);
    if (hit && hit.revision === this.view.contentRevision && hit.bundle === bundle) return hit;
    const snapshot = snapshotFor(this.view, sub, bundle);
    const entry = { snapshot, json: JSON.stringify(snapshot), revision: this.view.contentRevision, bundle };
    this.cache.delete(key);
    if (this.cache.size >= MAX_CACHED) this.evictStale(entry.revision);
    this.cache.set(key, entry);
    return entry;
  }

  /** Drops the entries of older revisions; if none, the oldest built (a Map keeps insertion order). */
  private evictStale(revision: number): void {
    for (const [key, e] of this.cache) if (e.revision !== revision) this.cache.delete(key);
    if (this.cache.size >= MAX_CACHED) this.cache.delete(this.cache.keys().next().value!);
  }

  current(sub: Subscriber): ProxySnapshot {
    return this.cached(sub).snapshot;
  }

  poll(sub: Subscriber, known: string | undefined, waitMs: number, signal?: AbortSignal): Promise<CachedSnapshot | undefined> {
    const now = this.cached(sub);
    if (now.snapshot.version !== known || waitMs <= 0) return Promise.resolve(now.snapshot.version !== known ? now : undefined);
    return new Promise((resolve) => {
      const waiter: Waiter = {
        sub,
        known,
        resolve: (s) => {
          clearTimeout(timer);
          this.waiters.delete(waiter);
          signal?.removeEventListener("abort", onAbort);
          resolve(s);
        },
      };
      const onAbort = () => waiter.resolve(undefined);
      const timer = setTimeout(() => waiter.resolve(undefined), waitMs);
      signal?.addEventListener("abort", onAbort);
      this.waiters.add(waiter);
    });
  }

  /** Answers every poll waiting for a change: the view changed, or the bundle sent with every snapshot: each whose snapshot changed. */
  wake(): void {
    for (const w of [...this.waiters]) {
      const snap = this.cached(w.sub);
      if (snap.snapshot.version !== w.known) w.resolve(snap);
    }
  }

  /** Ends every open poll (on shutdown), so proxies reconnect elsewhere at once. */
  closeAll(): void {
    for (const w of [...this.waiters]) w.resolve(undefined);
  }

  get open(): number {
    return this.waiters.size;
  }

  /** Views whose snapshot is kept now. */
  get cachedViews(): number {
    return this.cache.size;
  }
}
