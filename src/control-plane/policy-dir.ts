/**
 * The policies directory: loaded at start and reloaded when it changes, followed as the
 * sidecar follows its files (../core/file-watch.ts): watched all the way down, watched
 * anew when the directory at the path is replaced (`mv new policies`), and read again every
 * 30 s for what a watch misses. A load with any error changes nothing (the last good set
 * keeps serving) and is reported; a good load applies what is there and deletes what this
 * directory applied before and no longer has, as one change (manifest-store.ts): a Service
 * it drops that a manifest applied elsewhere still uses refuses the load. Reading the same
 * set again applies nothing.
 */
import { formatManifestError, loadManifests } from "../config/load.ts";
import { watchFiles, type FileWatch } from "../core/file-watch.ts";
import type { Logger } from "../core/log.ts";
import type { Store } from "../store/store.ts";
import { applyDocuments, SHARED_KINDS } from "./manifest-store.ts";
import { manifestId } from "./manifest-rules.ts";
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
  private watch?: FileWatch;
  /** What the last load read, once it was applied or its files refused: reading it again changes nothing. */
  private settled?: string;
  /** The errors last logged, so a retry refused alike is not logged again. */
  private logged?: string;

  constructor(private dir: string, private store: Store, private view: ControlPlaneView, private log: Logger) {
    this.status = { dir, errors: [], applied: 0 };
  }

  async start(): Promise<void> {
    await this.load();
    this.watch = watchFiles([this.dir], () => this.reload());
  }

  stop(): void {
    this.watch?.stop();
  }

  /** A reload the store failed (etcd away) keeps the last good set; the next change or re-read tries again. */
  private async reload(): Promise<void> {
    try {
      await this.load();
    } catch (err) {
      this.log.error({ dir: this.dir, err: (err as Error).message }, "policies not loaded; the last good set keeps serving");
    }
  }

  private async load(): Promise<void> {
    const { manifests, errors } = await loadManifests([this.dir], { allowEmpty: true });
    const problems = errors.map(formatManifestError);
    const shared = manifests.filter((m) => SHARED_KINDS.has(m.manifest.kind));
    const documents = shared.map((m) => ({ source: `${m.file}#${m.doc}`, manifest: m.raw }));
    // Not applied again unchanged: the periodic re-read must not undo what was changed through the API since.
    const read = JSON.stringify(problems.length ? { problems } : { documents });
    if (read === this.settled) return;
    const here = new Set(shared.map((m) => manifestId(m.manifest)));
    const gone = [...this.owned].filter((id) => !here.has(id));
    const result = problems.length ? undefined : await applyDocuments(this.store, this.view, documents, gone);
    this.status.loadedAt = new Date().toISOString();
    this.status.errors = result ? result.errors : problems;
    if (!result?.ok) {
      // Bad files stay bad until they change; a refused apply may pass once the store changes, so it is tried again.
      if (!result) this.settled = read;
      const logged = JSON.stringify(this.status.errors);
      if (logged !== this.logged) this.log.error({ dir: this.dir, errors: this.status.errors }, "policies rejected; the last good set keeps serving");
      this.logged = logged;
      return;
    }
    this.settled = read;
    this.logged = undefined;
    this.owned = here;
    this.status.applied = here.size;
    this.log.info({ dir: this.dir, applied: here.size, removed: result.applied.filter((a) => a.outcome === "deleted").length }, "policies loaded");
  }
}
