/**
 * Writing state a person depends on: all-or-nothing, keys private, nothing
 * overwritten by surprise. Every file of a set is written to a temporary name
 * first and renamed only once all were written, so a failure leaves no half set;
 * should a rename fail part-way, the files already replaced get their old content back.
 * Directories it creates are never writable by others, whatever the umask: whoever
 * may write a directory may replace the certificates and keys in it. A failure is a
 * CantCreateError (exit 73) naming the user's path.
 */
import { chmodSync, copyFileSync, existsSync, linkSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { CantCreateError, DataError } from "./errors.ts";

export interface OutputFile {
  path: string;
  content: string;
  /** Private keys get 0600; everything else 0644. */
  secret?: boolean;
}

/** A directory created for a private key gets 0700; any other one it needs, 0755. */
const PRIVATE_DIR_MODE = 0o700;
const DIR_MODE = 0o755;

export function writeFileSet(files: OutputFile[], opts: { force: boolean }): void {
  refuseExisting(files, opts.force);
  const privateDirs = new Set(files.filter((f) => f.secret).map((f) => dirname(f.path)));
  const staged: { tmp: string; path: string }[] = [];
  for (const f of files) {
    try {
      makeDirs(dirname(f.path), privateDirs.has(dirname(f.path)) ? PRIVATE_DIR_MODE : DIR_MODE);
      const tmp = join(dirname(f.path), `.${Date.now()}-${Math.random().toString(36).slice(2)}.tmp`);
      const mode = f.secret ? 0o600 : 0o644;
      writeFileSync(tmp, f.content, { mode, flag: "wx" });
      staged.push({ tmp, path: f.path });
      chmodSync(tmp, mode); // the umask may have narrowed or widened the create mode
    } catch (err) {
      for (const s of staged) rmSync(s.tmp, { force: true });
      throw cannotWrite(f.path, err);
    }
  }
  commit(staged);
}

/**
 * Without `force`, no existing target is replaced. A directory is never replaced, so for
 * one the advice to pass --force would not help: it is named as what it is.
 */
function refuseExisting(files: OutputFile[], force: boolean): void {
  if (force) return;
  const existing = files.filter((f) => existsSync(f.path)).map((f) => f.path);
  const dir = existing.find(isDirectory);
  if (dir !== undefined) throw new CantCreateError(IS_A_DIRECTORY, dir);
  if (existing.length)
    throw new CantCreateError(`already exists; pass --force to overwrite (${existing.join(", ")})`, existing[0]);
}

const IS_A_DIRECTORY = "is a directory, where a file is to be written";

/**
 * A file system error while writing `target`, as a person can act on it: naming their path
 * (the file, or whatever is in the way of its directory), never the temporary file it
 * happened on. An error that is not the file system's is returned as it is.
 */
function cannotWrite(target: string, err: unknown): unknown {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (typeof code !== "string") return err;
  const blocker = fileInTheWay(dirname(target));
  if (blocker !== undefined) return new CantCreateError(`is not a directory, so ${target} cannot be written`, blocker);
  if (isDirectory(target)) return new CantCreateError(IS_A_DIRECTORY, target);
  // Node's text reads "EACCES: permission denied, open '<path>'": the words without the path.
  const words = /^E[A-Z]+: ([^,]+)/.exec((err as Error).message)?.[1] ?? "failed";
  return new CantCreateError(`cannot be written: ${words} (${code})`, target);
}

/**
 * What stops `dir` from being a directory: the nearest existing path at or above it that is
 * not one (a regular file given where a directory goes); undefined when nothing is in the way.
 */
export function fileInTheWay(dir: string): string | undefined {
  for (let d = dir; ; d = dirname(d)) {
    try {
      return statSync(d).isDirectory() ? undefined : d;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if ((code !== "ENOENT" && code !== "ENOTDIR") || dirname(d) === d) return undefined;
    }
  }
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

/**
 * Renames every staged file over its target. A rename can fail although writing beside it
 * worked (the target a directory, or a file mounted on its own): then the targets already
 * replaced get their old content back, kept just before under another name, so a new key
 * never sits beside an old chain. The kept ones are removed once all is renamed.
 */
function commit(staged: { tmp: string; path: string }[]): void {
  const done: { path: string; old?: string }[] = [];
  let at = "";
  try {
    for (const s of staged) {
      at = s.path;
      const old = existsSync(s.path) ? keep(s.path, `${s.tmp}.old`) : undefined;
      try {
        renameSync(s.tmp, s.path);
      } catch (err) {
        if (old) rmSync(old, { force: true });
        throw err;
      }
      done.push({ path: s.path, old });
    }
  } catch (err) {
    for (const d of done.reverse()) {
      try {
        if (d.old) renameSync(d.old, d.path);
        else rmSync(d.path, { force: true });
      } catch {
        // Best effort: the error thrown below says which write failed.
      }
    }
    for (const s of staged) rmSync(s.tmp, { force: true });
    throw cannotWrite(at, err);
  }
  for (const d of done) if (d.old) rmSync(d.old, { force: true });
}

/**
 * The file at `path` kept under `as`: a hard link (nothing read, so no read permission
 * needed), else a copy; undefined when neither can be made, and then that file alone
 * cannot be put back (the write itself must not fail for it).
 */
function keep(path: string, as: string): string | undefined {
  try {
    linkSync(path, as);
    return as;
  } catch {
    try {
      copyFileSync(path, as);
      return as;
    } catch {
      rmSync(as, { force: true });
      return undefined;
    }
  }
}

/** Creates `dir` with `mode` and any missing parent with DIR_MODE; existing directories are left as they are. */
function makeDirs(dir: string, mode: number): void {
  const missing: string[] = [];
  for (let d = dir; !existsSync(d); d = dirname(d)) missing.unshift(d);
  for (const d of missing) {
    const wanted = d === dir ? mode : DIR_MODE;
    try {
      mkdirSync(d, { mode: wanted });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "EEXIST") continue; // made meanwhile by someone else: not ours to chmod
      throw err;
    }
    chmodSync(d, wanted); // the umask may have narrowed or widened the create mode
  }
}

/** Reads a text file a flag named, with an error that names the flag and the file. */
export function readTextFile(path: string, what: string): string {
  let st;
  try {
    st = statSync(path);
  } catch {
    throw new DataError(`${what} not found`, path);
  }
  if (!st.isFile()) throw new DataError(`${what} is not a regular file`, path);
  try {
    return readFileSync(path, "utf8");
  } catch (err) {
    throw new DataError(`${what} is not readable: ${(err as Error).message}`, path);
  }
}
