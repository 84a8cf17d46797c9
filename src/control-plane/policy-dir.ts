/**
 * The policies directory: loaded at start and reloaded when it changes. A load with any
 * error changes nothing (the last good set keeps serving) and is reported; a good load
 * applies what is there and deletes what this directory applied before and no longer has.
 */
import { watch, type FSWatcher } from "node:fs";
import { formatManifestError, loadManifests } from "../config/load.ts";
import type { Logger } from "../core/log.ts";
import type { Store } from "../store/store.ts";
import { applyDocuments, deleteManifest, SHARED_KINDS } from "./manifest-store.ts";
import type { ControlPlaneView } from "./view.ts";

export interface PolicyDirStatus {
  dir: string;
  /** When the last load was tried, and its errors (empty: it was applied). */
  loadedAt?: string;
  errors: string[];
  applied: number;
}

export class PolicyDir {
  readonly status: PolicyDirStatus;
  private owned = new Set<string>();
  private watcher?: FSWatcher;
  private timer?: Timer;
  private loading: Promise<void> = Promise.resolve();

  constructor(private dir: string, private store: Store, private view: ControlPlaneView, private log: Logger) {
    this.status = { dir, errors: [], applied: 0 };
  }

  async start(): Promise<void> {
    await this.load();
    try {
      this.watcher = watch(this.dir, { recursive: true }, () => this.schedule());
    } catch (err) {
      this.log.warn({ dir: this.dir, err: (err as Error).message }, "cannot watch the policies directory; changes need a restart");
    }
  }

  stop(): void {
    this.watcher?.close();
    clearTimeout(this.timer);
  }

  /** Editors write in several steps; wait for quiet before reading. */
  private schedule(): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.loading = this.loading.then(() => this.load());
    }, 250);
  }

  private async load(): Promise<void> {
    const { manifests, errors } = await loadManifests([this.dir], { allowEmpty: true });
    const problems = errors.map(formatManifestError);
    const shared = manifests.filter((m) => SHARED_KINDS.has(m.manifest.kind));
    const result = problems.length ? undefined : await applyDocuments(this.store, this.view, shared.map((m) => ({ source: `${m.file}#${m.doc}`, manifest: m.raw })));
    this.status.loadedAt = new Date().toISOString();
    this.status.errors = result ? result.errors : problems;
    if (!result?.ok) {
      this.log.error({ dir: this.dir, errors: this.status.errors }, "policies rejected; the last good set keeps serving");
      return;
    }
    const now = new Set(result.applied.map((a) => `${a.kind}/${a.namespace}/${a.name}`));
    // Policies before the services they name, so a delete is never refused for a reference.
    const servicesLast = (id: string) => (id.startsWith("Service/") ? 1 : 0);
    const gone = [...this.owned].filter((id) => !now.has(id)).sort((a, b) => servicesLast(a) - servicesLast(b));
    for (const id of gone) {
      const [kind, namespace, name] = id.split("/") as [string, string, string];
      await deleteManifest(this.store, this.view, kind, namespace, name);
    }
    this.owned = now;
    this.status.applied = now.size;
    this.log.info({ dir: this.dir, applied: now.size, removed: gone.length }, "policies loaded");
  }
}
