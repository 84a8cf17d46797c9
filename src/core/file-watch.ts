/**
 * Files and directories something else rewrites while mesh runs (certificates, a static
 * config, a policies directory). `read` is called when any of them may have changed: the
 * directory each is in is watched (an editor's save and a Kubernetes volume's symlink swap
 * both show there), and a directory given is watched all the way down. A watch whose
 * directory was replaced (`mv new policies`) would follow the old one where it went, so
 * before each read every watch is checked against the directory now at its path and moved
 * to it. `read` also runs every `recheckMs` and on check() (SIGHUP), for what a watch
 * misses: a file behind a symlink elsewhere, a network filesystem. Writers touch files in
 * quick succession, so a watch event waits for them to settle. Reads never overlap; one
 * asked for during a read runs after it. `read` reports its own failures: it should not throw.
 */
import { statSync, watch, type FSWatcher, type Stats } from "node:fs";
import { basename, dirname } from "node:path";

/** Writers touch several files (or write one in pieces) in quick succession: one read after they settle. */
const SETTLE_MS = 250;

export interface FileWatch {
  /** Reads now; settles once that read (and any asked for during it) is done. */
  check(): Promise<void>;
  stop(): void;
}

/** One fs.watch: a directory, with what is under it or not, and the one entry of it that matters (any, if none). */
interface WatchSpec {
  readonly dir: string;
  readonly recursive: boolean;
  readonly entry?: string;
}

interface ActiveWatch {
  readonly watcher: FSWatcher;
  /** Device and inode of the directory watched: another one at the path means it was replaced. */
  readonly identity: string;
}

export function watchFiles(paths: readonly string[], read: () => Promise<void>, recheckMs = 30_000): FileWatch {
  let running: Promise<void> | undefined;
  let again = false;
  let settle: Timer | undefined;
  let stopped = false;
  const active = new Map<string, ActiveWatch>();

  const check = (): Promise<void> => {
    if (running !== undefined) {
      again = true;
      return running;
    }
    running = (async () => {
      try {
        do {
          again = false;
          rewatch();
          await read();
        } while (again);
      } finally {
        running = undefined; // a read that threw must not stop the ones after it
      }
    })();
    return running;
  };
  const soon = () => {
    clearTimeout(settle);
    settle = setTimeout(() => void check(), SETTLE_MS);
  };

  /** Watches what `paths` need now, on the directories now at their paths. */
  const rewatch = () => {
    if (stopped) return; // a read running at stop() must not watch again
    const wanted = new Map<string, WatchSpec>();
    const add = (spec: WatchSpec) => wanted.set(JSON.stringify(spec), spec);
    for (const path of paths) {
      const isDir = fileStat(path)?.isDirectory() ?? false;
      // A directory's own changes show inside it; its replacement shows in its parent, under its name.
      add({ dir: dirname(path), recursive: false, ...(isDir && { entry: basename(path) }) });
      if (isDir) add({ dir: path, recursive: true });
    }
    const identities = new Map([...wanted.values()].map((spec) => [spec.dir, identityOf(spec.dir)]));
    for (const [key, w] of active) {
      const spec = wanted.get(key);
      if (spec && identities.get(spec.dir) === w.identity) continue;
      w.watcher.close();
      active.delete(key);
    }
    for (const [key, spec] of wanted) {
      const identity = identities.get(spec.dir);
      if (active.has(key) || identity === undefined) continue;
      try {
        const watcher = watch(spec.dir, { recursive: spec.recursive }, (_event, name) => {
          if (spec.entry === undefined || name === null || String(name) === spec.entry) soon();
        });
        watcher.on("error", () => {
          watcher.close();
          if (active.get(key)?.watcher === watcher) active.delete(key);
        });
        active.set(key, { watcher, identity });
      } catch {
        // Unwatchable (gone, no inotify): the periodic read still finds changes, and watches again.
      }
    }
  };

  rewatch();
  const recheck = setInterval(() => void check(), recheckMs);
  recheck.unref();

  return {
    check,
    stop() {
      stopped = true;
      clearInterval(recheck);
      clearTimeout(settle);
      for (const w of active.values()) w.watcher.close();
      active.clear();
    },
  };
}

function fileStat(path: string): Stats | undefined {
  try {
    return statSync(path, { throwIfNoEntry: false });
  } catch {
    return undefined; // not reachable (permission, a loop): as if missing
  }
}

function identityOf(dir: string): string | undefined {
  const s = fileStat(dir);
  return s?.isDirectory() ? `${s.dev}:${s.ino}` : undefined;
}
