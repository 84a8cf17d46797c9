/**
 * This replica's in-memory copy of what it serves from: manifests and registered
 * endpoints. It lists the store, then watches from the next revision, so it misses no
 * change, whichever replica (or etcd member) made it. If the watch ends (history compacted
 * under it), it lists again, and keeps trying with backoff until a list succeeds: meanwhile
 * the last view keeps serving (as istiod serves its last push) and `sync()` says it is
 * stale. A watch that lost its connection is treated alike: the stream it reopens replays
 * what it missed, but nothing says when that replay is done, and a list does. Listeners
 * hear of every change, coalesced per tick.
 */
import type { Logger } from "../core/log.ts";
import { parseManifest, type Manifest } from "../config/manifest.ts";
import "../config/kinds/index.ts";
import type { Store, WatchEvent } from "../store/store.ts";
import { MANIFESTS_GUARD, PREFIX } from "./keys.ts";
import type { EndpointRecord } from "./registration.ts";

/** A manifest as written (what is sent and shown) and as validated (what is used). */
export interface StoredManifest {
  raw: Record<string, unknown>;
  manifest: Manifest;
}

/** Whether the view follows the store, for /v1/status. */
export interface ViewSync {
  /** False from the moment the store watch ended or lost its connection until a re-list succeeds. */
  synced: boolean;
  /** The store revision the view reflects. */
  revision: number;
  /** While not synced: when the view stopped following the store. */
  staleSince?: string;
  /** While not synced: re-lists failed in a row, and the last one's error. */
  failedRelists: number;
  error?: string;
}

/** The first re-list after a watch ended; each failed one doubles the wait, up to the cap. */
const RELIST_FIRST_MS = 500;
const RELIST_MAX_MS = 5_000;

export class ControlPlaneView {
  /** By `Kind/namespace/name`. */
  readonly manifests = new Map<string, StoredManifest>();
  readonly endpoints = new Map<string, EndpointRecord>();
  /** Stored manifests that do not validate (written by a newer version, say), by `Kind/namespace/name`: not served, but there to delete. */
  readonly unreadable = new Set<string>();
  private listeners = new Set<() => void>();
  private cancel?: () => void;
  private notifyQueued = false;
  private stopped = false;
  /** Store revision the view reflects. */
  revision = 0;
  /** Bumped only when manifests or endpoints change: what snapshots are cached against. */
  contentRevision = 0;
  /** The modRevision of MANIFESTS_GUARD the view has applied (0: none yet): it holds every manifest write up to it. */
  manifestsGuard = 0;
  private guardWaiters = new Set<{ modRevision: number; done: (seen: boolean) => void }>();
  private synced = false;
  private staleSince: Date | undefined;
  private failedRelists = 0;
  private relistError: string | undefined;
  private relistTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(private store: Store, private log: Logger) {}

  /** Lists the store and follows it from there. Throws if the list fails (the last view, if any, stays). */
  async start(): Promise<void> {
    this.cancel?.();
    const list = await this.store.list("/mesh/");
    if (this.stopped) return;
    this.manifests.clear();
    this.endpoints.clear();
    this.unreadable.clear();
    this.manifestsGuard = 0;
    for (const kv of list.kvs) this.apply({ type: "put", key: kv.key, value: kv.value, revision: kv.modRevision, kv });
    this.revision = list.revision;
    this.contentRevision++;
    this.notify();
    this.synced = true;
    this.staleSince = undefined;
    this.failedRelists = 0;
    this.relistError = undefined;
    this.cancel = this.store.watch(
      "/mesh/",
      {
        onEvent: (ev) => {
          this.revision = Math.max(this.revision, ev.revision);
          // Acks, token claims and the like change no proxy's config: waking every
          // waiting poll for them would cost a snapshot per subscriber view each time.
          if (!this.apply(ev)) return;
          this.contentRevision++;
          this.notify();
        },
        onError: (err) => this.lost(err.message),
        onInterrupted: (reason) => {
          this.cancel?.();
          this.lost(`lost its connection: ${reason}`);
          this.relistError = `its store watch lost its connection: ${reason}`;
        },
      },
      list.revision + 1,
    );
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.relistTimer);
    this.cancel?.();
    for (const w of [...this.guardWaiters]) w.done(false);
  }

  /** The watch ended or was cut: stale from now until a list succeeds. */
  private lost(reason: string): void {
    if (this.stopped) return;
    this.synced = false;
    this.staleSince = new Date();
    this.log.warn({ err: reason }, "store watch ended; listing again");
    this.relistAfter(RELIST_FIRST_MS);
  }

  sync(): ViewSync {
    if (this.synced) return { synced: true, revision: this.revision, failedRelists: 0 };
    const sync: ViewSync = { synced: false, revision: this.revision, failedRelists: this.failedRelists };
    if (this.staleSince) sync.staleSince = this.staleSince.toISOString();
    if (this.relistError !== undefined) sync.error = this.relistError;
    return sync;
  }

  /**
   * Resolves true once the view has applied MANIFESTS_GUARD at `modRevision` or later (and with
   * it every manifest write up to it), false if that takes past `timeoutMs`.
   */
  seenGuard(modRevision: number, timeoutMs: number): Promise<boolean> {
    if (this.manifestsGuard >= modRevision) return Promise.resolve(true);
    if (this.stopped) return Promise.resolve(false);
    return new Promise((resolve) => {
      const waiter = {
        modRevision,
        done: (seen: boolean) => {
          clearTimeout(timer);
          this.guardWaiters.delete(waiter);
          resolve(seen);
        },
      };
      const timer = setTimeout(() => waiter.done(false), timeoutMs);
      this.guardWaiters.add(waiter);
    });
  }

  /** A re-list in `delayMs`; each failure logs and tries again later, so the view recovers whenever the store is back. */
  private relistAfter(delayMs: number): void {
    this.relistTimer = setTimeout(() => {
      this.relistTimer = undefined;
      if (this.stopped) return;
      this.start().catch((err: unknown) => {
        if (this.stopped) return;
        this.failedRelists++;
        this.relistError = (err as Error).message;
        const next = Math.min(RELIST_MAX_MS, delayMs * 2);
        this.log.error({ err: this.relistError, failures: this.failedRelists, staleSince: this.staleSince?.toISOString(), retryInMs: next }, "re-list failed; the last view keeps serving, trying again");
        this.relistAfter(next);
      });
    }, delayMs);
  }

  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Applies a change; false when the key is not one the view serves from. */
  private apply(ev: WatchEvent): boolean {
    if (ev.key === MANIFESTS_GUARD) {
      this.manifestsGuard = ev.type === "put" ? ev.revision : 0;
      // Woken now, they resume after this delivery: a revision's events all come in one.
      for (const w of [...this.guardWaiters]) if (w.modRevision <= this.manifestsGuard) w.done(true);
      return false;
    }
    if (ev.key.startsWith(PREFIX.manifests)) {
      const id = ev.key.slice(PREFIX.manifests.length);
      const parsed = ev.type === "put" ? parseStored(ev.value) : undefined;
      if (ev.type === "delete") this.manifests.delete(id);
      // A manifest that no longer validates (written by a newer version, say) is skipped, not served half-read.
      else if (parsed) this.manifests.set(id, parsed);
      else this.log.warn({ key: ev.key }, "stored manifest does not validate; ignoring it");
      if (ev.type === "put" && !parsed) this.unreadable.add(id);
      else this.unreadable.delete(id);
    } else if (ev.key.startsWith(PREFIX.endpoints)) {
      const id = ev.key.slice(PREFIX.endpoints.length);
      if (ev.type === "delete") this.endpoints.delete(id);
      else {
        try {
          this.endpoints.set(id, JSON.parse(ev.value) as EndpointRecord);
        } catch {
          this.log.warn({ key: ev.key }, "stored endpoint is not JSON; ignoring it");
        }
      }
    } else return false;
    return true;
  }

  private notify(): void {
    if (this.notifyQueued) return;
    this.notifyQueued = true;
    queueMicrotask(() => {
      this.notifyQueued = false;
      for (const l of this.listeners) l();
    });
  }
}

function parseStored(value: string): StoredManifest | undefined {
  try {
    const raw = JSON.parse(value) as Record<string, unknown>;
    const result = parseManifest(raw);
    return result.ok ? { raw, manifest: result.manifest } : undefined;
  } catch {
    return undefined;
  }
}
