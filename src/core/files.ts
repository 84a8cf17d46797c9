/**
 * Writing state a person depends on: all-or-nothing, keys private, nothing
 * overwritten by surprise. Every file of a set is written to a temporary name
 * first and renamed only once all were written, so a failure leaves no half set;
 * should a rename fail part-way, the files already replaced get their old content back.
 * Directories it creates are never writable by others, whatever the umask: whoever
 * may write a directory may replace the certificates and keys in it.
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
  if (!opts.force) {
    const existing = files.filter((f) => existsSync(f.path)).map((f) => f.path);
    if (existing.length)
      throw new CantCreateError(`already exists; pass --force to overwrite (${existing.join(", ")})`, existing[0]);
  }
  const privateDirs = new Set(files.filter((f) => f.secret).map((f) => dirname(f.path)));
  const staged: { tmp: string; path: string }[] = [];
  try {
    for (const f of files) {
      makeDirs(dirname(f.path), privateDirs.has(dirname(f.path)) ? PRIVATE_DIR_MODE : DIR_MODE);
      const tmp = join(dirname(f.path), `.${Date.now()}-${Math.random().toString(36).slice(2)}.tmp`);
      const mode = f.secret ? 0o600 : 0o644;
      writeFileSync(tmp, f.content, { mode, flag: "wx" });
      chmodSync(tmp, mode); // the umask may have narrowed or widened the create mode
      staged.push({ tmp, path: f.path });
    }
  } catch (err) {
    for (const s of staged) rmSync(s.tmp, { force: true });
    throw err;
  }
  commit(staged);
}

/**
 * Renames every staged file over its target. A rename can fail although writing beside it
 * worked (the target a directory, or a file mounted on its own): then the targets already
 * replaced get their old content back, kept just before under another name, so a new key
 * never sits beside an old chain. The kept ones are removed once all is renamed.
 */
function commit(staged: { tmp: string; path: string }[]): void {
  const done: { path: string; old?: string }[] = [];
  try {
    for (const s of staged) {
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
    throw err;
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
