/**
 * This replica's in-memory copy of what it serves from: manifests and registered
 * endpoints. It lists the store, then watches from the next revision, so it misses no
 * change, whichever replica (or etcd member) made it. If history was compacted under
 * the watch, it lists again. Listeners hear of every change, coalesced per tick.
 */
import type { Logger } from "../core/log.ts";
import { parseManifest, type Manifest } from "../config/manifest.ts";
import "../config/kinds/index.ts";
import type { Store, WatchEvent } from "../store/store.ts";
import { PREFIX } from "./keys.ts";
import type { EndpointRecord } from "./registration.ts";

/** A manifest as written (what is sent and shown) and as validated (what is used). */
export interface StoredManifest {
  raw: Record<string, unknown>;
  manifest: Manifest;
}

export class ControlPlaneView {
  /** By `Kind/namespace/name`. */
  readonly manifests = new Map<string, StoredManifest>();
  readonly endpoints = new Map<string, EndpointRecord>();
  private listeners = new Set<() => void>();
  private cancel?: () => void;
  private notifyQueued = false;
  private stopped = false;
  /** Store revision the view reflects. */
  revision = 0;
  /** Bumped only when manifests or endpoints change: what snapshots are cached against. */
  contentRevision = 0;

  constructor(private store: Store, private log: Logger) {}

  async start(): Promise<void> {
    this.cancel?.();
    const list = await this.store.list("/mesh/");
    this.manifests.clear();
    this.endpoints.clear();
    for (const kv of list.kvs) this.apply({ type: "put", key: kv.key, value: kv.value, revision: kv.modRevision, kv });
    this.revision = list.revision;
    this.contentRevision++;
    this.notify();
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
        onError: (err) => {
          if (this.stopped) return;
          this.log.warn({ err: err.message }, "store watch ended; listing again");
          setTimeout(() => void this.start().catch((e) => this.log.error({ err: (e as Error).message }, "re-list failed")), 500);
        },
      },
      list.revision + 1,
    );
  }

  stop(): void {
    this.stopped = true;
    this.cancel?.();
  }

  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Applies a change; false when the key is not one the view serves from. */
  private apply(ev: WatchEvent): boolean {
    if (ev.key.startsWith(PREFIX.manifests)) {
      const id = ev.key.slice(PREFIX.manifests.length);
      if (ev.type === "delete") this.manifests.delete(id);
      else {
        const parsed = parseStored(ev.value);
        // A manifest that no longer validates (written by a newer version, say) is skipped, not served half-read.
        if (parsed) this.manifests.set(id, parsed);
        else this.log.warn({ key: ev.key }, "stored manifest does not validate; ignoring it");
      }
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
