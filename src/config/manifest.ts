/**
 * The manifest envelope (apiVersion, kind, metadata, spec) and the kind registry. Kinds
 * register themselves (see kinds/), so later work adds a kind without touching the
 * loader: `registerKind({ kind, spec, description })`.
 */
import { z } from "zod";
import { dnsLabel, StringMap } from "./common";
import { check, typeName, type Issue } from "./issues";
import { didYouMean } from "./suggest";

export const API_VERSION = "mesh.dev/v1alpha1";
/** Every apiVersion this build reads; a later version is added here, not per kind. */
export const API_VERSIONS: readonly string[] = [API_VERSION];

export const Metadata = z
  .strictObject({
    name: dnsLabel("name").describe("Name of the object: a DNS label, unique per kind and namespace."),
    namespace: dnsLabel("namespace").default("default").describe('Namespace of the object: a DNS label; default "default".'),
    labels: StringMap.optional().describe("Labels: string keys and values, for selecting objects."),
    annotations: StringMap.optional().describe("Annotations: string keys and values, for tools and people; never interpreted."),
  })
  .describe("Identifies the object.");
export type Metadata = z.output<typeof Metadata>;

export interface Manifest<K extends string = string, S = unknown> {
  apiVersion: string;
  kind: K;
  metadata: Metadata;
  spec: S;
}

export interface KindDef<K extends string = string, Out = unknown, S extends z.ZodType = z.ZodType> {
  readonly kind: K;
  readonly description: string;
  /** The spec schema as written (strict, described): what the reference docs are generated from. */
  readonly spec: S;
  /** The whole manifest; parsing also fills spec defaults that depend on metadata. */
  readonly schema: z.ZodType<Manifest<K, Out>>;
  is(manifest: Manifest): manifest is Manifest<K, Out>;
}

/** The typed manifest of a registered kind: `ManifestOf<typeof Service>`. */
export type ManifestOf<D> = D extends KindDef<infer K, infer Out> ? Manifest<K, Out> : never;

const registry = new Map<string, KindDef>();

export function kinds(): KindDef[] {
  return [...registry.values()].sort((a, b) => (a.kind < b.kind ? -1 : a.kind > b.kind ? 1 : 0));
}

export function getKind(kind: string): KindDef | undefined {
  return registry.get(kind);
}

const kindNames = () => kinds().map((k) => k.kind);

const ApiVersion = z
  .string()
  .superRefine((value, ctx) => {
    if (!API_VERSIONS.includes(value))
      ctx.addIssue({ code: "custom", message: `unknown apiVersion "${value}"; known: ${API_VERSIONS.join(", ")}` });
  })
  .describe(`The schema version: ${API_VERSION}.`);

/** `kind` of a document whose kind is not registered: always an error, naming the known kinds. */
const UnknownKind = z.unknown().superRefine((value, ctx) => {
  const known = kindNames();
  const list = `known kinds: ${known.join(", ")}`;
  let message: string;
  if (value === undefined) message = `required; ${list}`;
  else if (typeof value !== "string") message = `expected string, got ${typeName(value)}; ${list}`;
  else message = `unknown kind "${value}"${didYouMean(value, known)}; ${list}`;
  ctx.addIssue({ code: "custom", message });
});

/** Still checks the rest of the envelope when the kind is unknown, so those errors show too. */
const UnknownKindManifest = z.strictObject({ apiVersion: ApiVersion, kind: UnknownKind, metadata: Metadata, spec: z.unknown() });

export function registerKind<K extends string, S extends z.ZodType, Out = z.output<S>>(def: {
  kind: K;
  spec: S;
  description: string;
  /** Fills spec fields whose default comes from metadata (e.g. a Service's identity is its name). */
  resolve?: (spec: z.output<S>, metadata: Metadata) => Out;
}): KindDef<K, Out, S> {
  if (!/^[A-Z][A-Za-z0-9]*$/.test(def.kind)) throw new Error(`kind "${def.kind}" must be UpperCamelCase`);
  if (registry.has(def.kind)) throw new Error(`kind "${def.kind}" is registered twice`);
  const resolve = def.resolve ?? ((spec: z.output<S>) => spec as unknown as Out);
  const schema = z
    .strictObject({
      apiVersion: ApiVersion,
      kind: z.literal(def.kind).describe(`Always "${def.kind}".`),
      metadata: Metadata,
      spec: def.spec,
    })
    .transform((parsed): Manifest<K, Out> => {
      // zod cannot name the output of a generic spec schema; it is z.output<S> by construction.
      const m = parsed as unknown as Manifest<K, z.output<S>>;
      return { ...m, spec: resolve(m.spec, m.metadata) };
    });
  const kindDef: KindDef<K, Out, S> = {
    kind: def.kind,
    description: def.description,
    spec: def.spec,
    schema: schema as unknown as z.ZodType<Manifest<K, Out>>,
    is: (m): m is Manifest<K, Out> => m.kind === def.kind,
  };
  registry.set(def.kind, kindDef as unknown as KindDef);
  return kindDef;
}

export type ParsedManifest = { ok: true; manifest: Manifest } | { ok: false; issues: Issue[] };

/** Validates one parsed document against the schema its `kind` selects. */
export function parseManifest(doc: unknown): ParsedManifest {
  if (doc === null || doc === undefined) return { ok: false, issues: [{ path: "", message: "empty document" }] };
  if (typeof doc !== "object" || Array.isArray(doc)) {
    const message = `expected a manifest (an object with apiVersion, kind, metadata and spec), got ${typeName(doc)}`;
    return { ok: false, issues: [{ path: "", message }] };
  }
  const kind = (doc as { kind?: unknown }).kind;
  const def = typeof kind === "string" ? registry.get(kind) : undefined;
  const result = check(def ? def.schema : UnknownKindManifest, doc);
  // An unknown kind always has issues, so a success is always a registered kind's manifest.
  return result.ok ? { ok: true, manifest: result.value as Manifest } : result;
}
