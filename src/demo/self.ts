/**
 * How the demo runs this same mesh binary again for its children. A compiled binary
 * (`bun build --compile`) is its own executable and its modules live under Bun's
 * virtual `/$bunfs/` (`B:/~BUN/` on Windows); from source it is the Bun runtime plus
 * src/main.ts.
 */
import { join, relative, isAbsolute } from "node:path";

export function isCompiled(): boolean {
  return import.meta.path.startsWith("/$bunfs/") || import.meta.path.startsWith("B:/~BUN/");
}

/** The argv prefix that starts `mesh`: the binary, or the runtime and the entry script. */
export function meshArgv(): string[] {
  return isCompiled() ? [process.execPath] : [process.execPath, join(import.meta.dir, "..", "main.ts")];
}

/** How a user in the current directory would type `mesh` to reach the same mesh. */
export function meshCommandText(cwd = process.cwd()): string {
  if (!isCompiled()) {
    const root = join(import.meta.dir, "..", "..");
    return cwd === root ? "npm run mesh --" : meshArgv().join(" ");
  }
  const rel = relative(cwd, process.execPath);
  if (rel.startsWith("..") || isAbsolute(rel)) return process.execPath;
  return rel.includes("/") ? rel : `./${rel}`;
}
