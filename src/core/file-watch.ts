/**
 * Files something else rewrites while mesh runs (certificates, a static config). `read` is
 * called when any of them may have changed: their directories are watched (an editor's
 * save and a Kubernetes volume's symlink swap both show there), and `read` runs again every
 * `recheckMs` and on check() (SIGHUP), for what a watch misses: a file behind a symlink
 * elsewhere, a network filesystem. Writers touch files in quick succession, so a watch
 * event waits for them to settle. Reads never overlap; one asked for during a read runs
 * after it.
 */
import { watch, type FSWatcher } from "node:fs";
import { dirname } from "node:path";

/** Writers touch several files (or write one in pieces) in quick succession: one read after they settle. */
const SETTLE_MS = 250;

export interface FileWatch {
  /** Reads now; settles once that read (and any asked for during it) is done. */
  check(): Promise<void>;
  stop(): void;
}

export function watchFiles(paths: readonly string[], read: () => Promise<void>, recheckMs = 30_000): FileWatch {
  let running: Promise<void> | undefined;
  let again = false;
  let settle: Timer | undefined;

  const check = (): Promise<void> => {
    if (running !== undefined) {
      again = true;
      return running;
    }
    running = (async () => {
      do {
        again = false;
        await read();
      } while (again);
      running = undefined;
    })();
    return running;
  };
  const soon = () => {
    clearTimeout(settle);
    settle = setTimeout(() => void check(), SETTLE_MS);
  };
  const watchers: FSWatcher[] = [];
  for (const dir of new Set(paths.map((p) => dirname(p)))) {
    try {
      const w = watch(dir, soon);
      w.on("error", () => w.close());
      watchers.push(w);
    } catch {
      // Unwatchable (gone, no inotify): the periodic read still finds changes.
    }
  }
  const recheck = setInterval(() => void check(), recheckMs);
  recheck.unref();

  return {
    check,
    stop() {
      clearInterval(recheck);
      clearTimeout(settle);
      for (const w of watchers) w.close();
    },
  };
}
