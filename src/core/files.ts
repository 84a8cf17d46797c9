/**
 * Writing state a person depends on: all-or-nothing, keys private, nothing
 * overwritten by surprise. Every file of a set is written to a temporary name
 * first and renamed only once all were written, so a failure leaves no half set.
 */
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { CantCreateError, DataError } from "./errors.ts";

export interface OutputFile {
  path: string;
  content: string;
  /** Private keys get 0600; everything else 0644. */
  secret?: boolean;
}

export function writeFileSet(files: OutputFile[], opts: { force: boolean }): void {
  if (!opts.force) {
    const existing = files.filter((f) => existsSync(f.path)).map((f) => f.path);
    if (existing.length)
      throw new CantCreateError(`already exists; pass --force to overwrite (${existing.join(", ")})`, existing[0]);
  }
  const staged: { tmp: string; path: string }[] = [];
  try {
    for (const f of files) {
      mkdirSync(dirname(f.path), { recursive: true });
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
  for (const s of staged) renameSync(s.tmp, s.path);
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
