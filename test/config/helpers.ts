/** Shared test helpers: parse manifest text in memory, and scratch directories on disk. */
import { mkdtemp, mkdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { formatManifestError, parseManifestText, type Manifest } from "../../src/config";

/** Every error of `text` (as file m.yaml), formatted. */
export function errorsOf(text: string, file = "m.yaml"): string[] {
  return parseManifestText(text, file).errors.map(formatManifestError);
}

/** The single manifest `text` defines; fails the test with the errors if it is invalid. */
export function manifestOf(text: string): Manifest {
  const { manifests, errors } = parseManifestText(text, "m.yaml");
  if (errors.length > 0) throw new Error(`unexpected errors:\n${errors.map(formatManifestError).join("\n")}`);
  if (manifests.length !== 1) throw new Error(`expected 1 manifest, got ${manifests.length}`);
  return manifests[0]!.manifest;
}

export function specOf(text: string): Record<string, unknown> {
  return manifestOf(text).spec as Record<string, unknown>;
}

/** A manifest text of `kind` with `spec` (YAML, indented by the caller as under `spec:`). */
export function doc(kind: string, spec: string, metadata = "  name: x"): string {
  return `apiVersion: mesh.dev/v1alpha1\nkind: ${kind}\nmetadata:\n${metadata}\nspec:\n${spec}\n`;
}

export interface Scratch {
  readonly dir: string;
  /** Writes `text` at `rel` under dir (creating folders) and returns the full path. */
  write(rel: string, text: string): Promise<string>;
  path(rel: string): string;
  cleanup(): Promise<void>;
}

export async function scratch(): Promise<Scratch> {
  const dir = await mkdtemp(join(tmpdir(), "mesh-config-test-"));
  return {
    dir,
    path: (rel) => join(dir, rel),
    async write(rel, text) {
      const path = join(dir, rel);
      await mkdir(dirname(path), { recursive: true });
      await writeFile(path, text);
      return path;
    },
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
}
