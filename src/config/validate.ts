/** `mesh validate -f FILE|DIR ...`: every error one per line, or a one-line summary. */
import { formatManifestError, loadManifests } from "./load";

export interface ValidateIO {
  out: (line: string) => void;
  err: (line: string) => void;
}

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? "" : "s"}`;

/** Returns the exit status: 0 when every manifest is valid, 1 otherwise. */
export async function runValidate(paths: readonly string[], io: ValidateIO): Promise<number> {
  if (paths.length === 0) {
    io.err("nothing to validate: name a file or directory");
    return 1;
  }
  const { manifests, errors } = await loadManifests(paths);
  if (errors.length > 0) {
    for (const e of errors) io.err(formatManifestError(e));
    const files = new Set(errors.map((e) => e.file)).size;
    io.err(`${plural(errors.length, "error")} in ${plural(files, "file")}`);
    return 1;
  }
  const counts = new Map<string, number>();
  for (const m of manifests) counts.set(m.manifest.kind, (counts.get(m.manifest.kind) ?? 0) + 1);
  // Most common kind first, then by name, so the summary is stable.
  const byKind = [...counts]
    .sort(([a, x], [b, y]) => y - x || (a < b ? -1 : a > b ? 1 : 0))
    .map(([kind, n]) => `${n} ${kind}`)
    .join(", ");
  const files = new Set(manifests.map((m) => m.file)).size;
  io.out(`${plural(manifests.length, "manifest")} valid (${byKind}) in ${plural(files, "file")}`);
  return 0;
}
