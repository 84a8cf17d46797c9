/**
 * Expands `-f` arguments into manifest files: a file is taken as given (any extension),
 * a directory is walked recursively for *.yaml, *.yml and *.json. Order is deterministic:
 * arguments in order, each directory's entries sorted by name. Hidden entries (".git")
 * are skipped.
 */
import { readdir, realpath, stat } from "node:fs/promises";
import { extname, join, resolve } from "node:path";

export const MANIFEST_EXTENSIONS = [".yaml", ".yml", ".json"];

export interface PathProblem {
  readonly file: string;
  readonly message: string;
}

export function errnoMessage(err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code;
  switch (code) {
    case "ENOENT":
      return "no such file or directory";
    case "EACCES":
    case "EPERM":
      return "permission denied";
    case "EISDIR":
      return "is a directory";
    case "ENOTDIR":
      return "not a directory";
    case "ELOOP":
      return "too many levels of symbolic links";
    default:
      return (err as Error).message ?? String(err);
  }
}

const byName = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

function isManifestName(name: string): boolean {
  return MANIFEST_EXTENSIONS.includes(extname(name).toLowerCase());
}

async function walk(dir: string, files: string[], problems: PathProblem[], seen: Set<string>): Promise<void> {
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch (err) {
    problems.push({ file: dir, message: `cannot read directory: ${errnoMessage(err)}` });
    return;
  }
  for (const entry of entries.sort((a, b) => byName(a.name, b.name))) {
    if (entry.name.startsWith(".")) continue;
    const path = join(dir, entry.name);
    let isDir = entry.isDirectory();
    if (entry.isSymbolicLink()) {
      // Follow links; a dangling one with a manifest name is reported when it is read.
      isDir = await stat(path).then((s) => s.isDirectory(), () => false);
    }
    if (isDir) {
      // realpath, so a link back up the tree is walked once rather than forever.
      const real = await realpath(path).catch(() => resolve(path));
      if (!seen.has(real)) await walk(path, files, problems, seen.add(real));
    } else if (isManifestName(entry.name)) {
      files.push(path);
    }
  }
}

/** Files to read and problems with the paths themselves, interleaved in argument order. */
export type PathItem = { readonly file: string; readonly message?: undefined } | PathProblem;

/** `allowEmpty`: a directory without manifests is an empty set, not an error (a watched policies directory). */
export async function expandPaths(paths: readonly string[], allowEmpty = false): Promise<PathItem[]> {
  const items: PathItem[] = [];
  // The same file named twice (`-f dir -f dir/a.yaml`) is loaded once, not reported as duplicates.
  const seenFiles = new Set<string>();
  const addFile = (file: string) => {
    if (!seenFiles.has(resolve(file))) items.push({ file });
    seenFiles.add(resolve(file));
  };
  for (const path of paths) {
    let isDir: boolean;
    try {
      isDir = (await stat(path)).isDirectory();
    } catch (err) {
      items.push({ file: path, message: errnoMessage(err) });
      continue;
    }
    if (!isDir) {
      addFile(path);
      continue;
    }
    const found: string[] = [];
    const problems: PathProblem[] = [];
    await walk(path, found, problems, new Set([await realpath(path)]));
    items.push(...problems);
    if (found.length === 0 && problems.length === 0 && !allowEmpty)
      items.push({ file: path, message: `no ${MANIFEST_EXTENSIONS.map((e) => `*${e}`).join(", ")} files in directory` });
    found.forEach(addFile);
  }
  return items;
}
