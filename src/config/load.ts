/**
 * Loads manifests from files and directories and reports every problem at once: bad
 * paths, unreadable, oversized or non-UTF-8 files, syntax errors, repeated keys, schema
 * violations in every document, and objects defined twice. Errors format as
 * `file#doc path: message`.
 */
import { splitDocuments } from "./documents";
import { check } from "./issues";
import { getKind, Metadata, parseManifest, type Manifest } from "./manifest";
import { readManifestFile } from "./manifest-file";
import { expandPaths } from "./walk";
import "./kinds";

export interface ManifestError {
  /** The file (or path argument) as given on the command line, or joined onto a given directory. */
  readonly file: string;
  /** 0-based document index within the file; undefined when the whole file or path is at fault. */
  readonly doc?: number;
  /** Dotted path into the document (`spec.ports[0].name`); "" for the document itself. */
  readonly path: string;
  readonly message: string;
}

export interface LoadedManifest {
  readonly file: string;
  readonly doc: number;
  readonly manifest: Manifest;
  /** The document as written, before defaults: what a control plane stores and shows. */
  readonly raw: unknown;
}

export interface LoadResult {
  manifests: LoadedManifest[];
  errors: ManifestError[];
}

/** `policies/routes.yaml#2 spec.rules[0].weight: expected number ≥ 0`. */
export function formatManifestError(e: ManifestError): string {
  const where = e.doc === undefined ? e.file : `${e.file}#${e.doc}`;
  return `${where}${e.path ? ` ${e.path}` : ""}: ${e.message}`;
}

function location(file: string, doc: number): string {
  return `${file}#${doc}`;
}

/** Who a document defines, read even from an invalid document so duplicates still show. */
interface Identity {
  readonly file: string;
  readonly doc: number;
  readonly key: string;
  readonly label: string;
}

function identify(file: string, doc: number, value: unknown): Identity | undefined {
  if (typeof value !== "object" || value === null) return undefined;
  const { kind, metadata } = value as { kind?: unknown; metadata?: unknown };
  const meta = check(Metadata, metadata);
  if (typeof kind !== "string" || !getKind(kind) || !meta.ok) return undefined;
  const { namespace, name } = meta.value;
  return { file, doc, key: `${kind}\0${namespace}\0${name}`, label: `${kind} "${namespace}/${name}"` };
}

/** Two objects with one kind, namespace and name: the later one is the error. */
function duplicates(ids: readonly Identity[]): ManifestError[] {
  const first = new Map<string, Identity>();
  const errors: ManifestError[] = [];
  for (const id of ids) {
    const earlier = first.get(id.key);
    if (!earlier) first.set(id.key, id);
    else
      errors.push({
        file: id.file,
        doc: id.doc,
        path: "metadata.name",
        message: `duplicate ${id.label}, first defined at ${location(earlier.file, earlier.doc)}`,
      });
  }
  return errors;
}

interface FileResult extends LoadResult {
  ids: Identity[];
}

function parseFile(text: string, file: string): FileResult {
  const result: FileResult = { manifests: [], errors: [], ids: [] };
  const split = splitDocuments(text, file);
  if (!split.ok) result.errors.push({ file, path: "", message: split.error });
  else if (split.docs.length === 0) result.errors.push({ file, path: "", message: "no documents in file" });
  else
    for (const raw of split.docs) {
      const doc = raw.index;
      if ("error" in raw) {
        result.errors.push({ file, doc, path: "", message: raw.error });
        continue;
      }
      // Issues of the text (a repeated key) and of the schema are reported together.
      for (const issue of raw.issues) result.errors.push({ file, doc, ...issue });
      const parsed = parseManifest(raw.value);
      if (!parsed.ok) for (const issue of parsed.issues) result.errors.push({ file, doc, ...issue });
      else if (raw.issues.length === 0) result.manifests.push({ file, doc, manifest: parsed.manifest, raw: raw.value });
      const id = identify(file, doc, raw.value);
      if (id) result.ids.push(id);
    }
  return result;
}

/** Parses the manifests in one file's text; `file` names it in errors and picks JSON (*.json) or YAML. */
export function parseManifestText(text: string, file: string): LoadResult {
  const { manifests, errors, ids } = parseFile(text, file);
  return { manifests, errors: [...errors, ...duplicates(ids)] };
}

export async function loadManifests(paths: readonly string[], opts: { allowEmpty?: boolean } = {}): Promise<LoadResult> {
  const errors: ManifestError[] = [];
  const manifests: LoadedManifest[] = [];
  const ids: Identity[] = [];
  for (const { file, message } of await expandPaths(paths, opts.allowEmpty)) {
    if (message !== undefined) {
      errors.push({ file, path: "", message });
      continue;
    }
    const read = await readManifestFile(file);
    if (!read.ok) {
      errors.push({ file, path: "", message: read.message });
      continue;
    }
    const result = parseFile(read.text, file);
    manifests.push(...result.manifests);
    errors.push(...result.errors);
    ids.push(...result.ids);
  }
  // Duplicates come last: each concerns two places, possibly in two files.
  errors.push(...duplicates(ids));
  return { manifests, errors };
}
