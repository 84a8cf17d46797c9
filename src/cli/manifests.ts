/** `mesh apply`, `mesh get` and `mesh delete`: manifests in a running control plane. */
import { stat } from "node:fs/promises";
import { resolve } from "node:path";
import { formatManifestError, loadManifests, type LoadedManifest } from "../config/load.ts";
import { SHARED_KINDS } from "../control-plane/manifest-store.ts";
import { getKind, kinds } from "../config/manifest.ts";
import { DataError, MeshError, UsageError } from "../core/errors.ts";
import { didYouMean } from "../config/suggest.ts";
import { nameProblem } from "../pki/spiffe.ts";
import { str, strs, type CommandSpec, type Parsed } from "./args.ts";
import { ADMIN_FLAGS, adminClient } from "./admin-client.ts";

interface ApplyAnswer {
  ok: boolean;
  errors: string[];
  applied: { kind: string; namespace: string; name: string; outcome: string }[];
}

/** The -f arguments that are files, resolved: what was named explicitly rather than found by walking a directory. */
async function namedFiles(paths: readonly string[]): Promise<Set<string>> {
  const files = new Set<string>();
  for (const path of paths) if (await stat(path).then((s) => !s.isDirectory(), () => false)) files.add(resolve(path));
  return files;
}

/**
 * Splits off the per-process kinds (ProxyConfig, ControlPlaneConfig) found by walking a
 * directory: a policies directory holds them beside the shared manifests, as
 * 'mesh control-plane --policies' reads it. Named as a file, such a kind stays in, for the
 * control plane to refuse with its reason.
 */
async function withoutLocalKindsFromDirectories(manifests: LoadedManifest[], paths: readonly string[]): Promise<{ kept: LoadedManifest[]; skipped: LoadedManifest[] }> {
  const named = await namedFiles(paths);
  const skip = (m: LoadedManifest) => !SHARED_KINDS.has(m.manifest.kind) && !named.has(resolve(m.file));
  return { kept: manifests.filter((m) => !skip(m)), skipped: manifests.filter(skip) };
}

export const applyCommand: CommandSpec = {
  name: "apply",
  summary: "Validate manifests and store them in the control plane: all of them, or none.",
  flags: [{ name: "file", short: "f", type: "strings", value: "FILE|DIR", required: true, description: "A manifest file, or a directory of *.yaml, *.yml, *.json." }, ...ADMIN_FLAGS],
  examples: ["mesh apply -f policies/", "mesh apply -f payments-policy.yaml"],
  async run(args, ctx) {
    const paths = strs(args, "file");
    const { manifests, errors } = await loadManifests(paths);
    if (errors.length) throw new DataError(`nothing applied:\n  ${errors.map(formatManifestError).join("\n  ")}`);
    const { kept, skipped } = await withoutLocalKindsFromDirectories(manifests, paths);
    if (skipped.length) ctx.err(skippedNote(skipped));
    if (!kept.length) {
      ctx.err("nothing else to apply");
      return 0;
    }
    const documents = kept.map((m) => ({ source: `${m.file}#${m.doc}`, manifest: m.raw }));
    const { status, body } = await adminClient(args).call<ApplyAnswer & { error?: string }>("PUT", "/v1/manifests", { documents });
    // Refused whole: a rule broken (422), other replicas' writes kept winning (409), past one store transaction (413).
    if (status === 422 || status === 409 || status === 413) throw new DataError(`nothing applied:\n  ${body.errors.join("\n  ")}`);
    if (status !== 200) throw new MeshError(`apply failed (${status}): ${body.error ?? JSON.stringify(body)}`);
    for (const a of body.applied) ctx.out(`${a.kind}/${a.namespace}/${a.name} ${a.outcome}`);
    return 0;
  },
};

function skippedNote(skipped: LoadedManifest[]): string {
  const kinds = [...new Set(skipped.map((m) => m.manifest.kind))].sort().join(", ");
  const where = skipped.map((m) => `${m.file}#${m.doc}`).join(", ");
  return `skipped ${skipped.length} manifest${skipped.length === 1 ? "" : "s"} of per-process kinds (${kinds}: ${where}); each configures one process, which reads it with --config`;
}

function kindArg(text: string | undefined): string {
  if (!text) throw new UsageError(`missing KIND; one of ${kinds().map((k) => k.kind).join(", ")}`, "mesh");
  const match = kinds().find((k) => k.kind.toLowerCase() === text.toLowerCase() || `${k.kind.toLowerCase()}s` === text.toLowerCase());
  if (!match || !getKind(match.kind)) throw new UsageError(`unknown kind "${text}"${didYouMean(text, kinds().map((k) => k.kind))}`, "KIND");
  return match.kind;
}

/** -n, checked as `mesh proxy -n` checks it: a namespace that cannot exist would read as an empty one. */
function namespaceArg(args: Parsed): string | undefined {
  const ns = str(args, "namespace");
  const problem = ns === undefined ? undefined : nameProblem("namespace", ns);
  if (problem) throw new UsageError(problem, "--namespace");
  return ns;
}

export const getCommand: CommandSpec = {
  name: "get",
  summary: "Show manifests stored in the control plane, as JSON.",
  positionals: [
    { name: "KIND", description: "Service, DestinationPolicy…", required: true },
    { name: "NAME", description: "One object; default all of the kind." },
  ],
  flags: [{ name: "namespace", short: "n", type: "string", value: "NS", description: "Only this namespace (default: all)." }, ...ADMIN_FLAGS],
  examples: ["mesh get service", "mesh get destinationpolicy ledger -n shop"],
  async run(args, ctx) {
    const kind = kindArg(args.positionals[0]);
    const q = new URLSearchParams({ kind });
    if (args.positionals[1]) q.set("name", args.positionals[1]);
    const ns = namespaceArg(args);
    if (ns) q.set("namespace", ns);
    const { status, body } = await adminClient(args).call<{ items: unknown[]; error?: string }>("GET", `/v1/manifests?${q}`);
    if (status !== 200) throw new MeshError(`get failed (${status}): ${body.error}`);
    if (args.positionals[1] && body.items.length === 0) throw new DataError(`no ${kind} "${args.positionals[1]}"${ns ? ` in namespace "${ns}"` : ""}`);
    ctx.out(JSON.stringify(args.positionals[1] ? body.items[0] : body.items, null, 2));
    return 0;
  },
};

export const deleteCommand: CommandSpec = {
  name: "delete",
  summary: "Remove a manifest from the control plane.",
  positionals: [
    { name: "KIND", description: "Service, DestinationPolicy…", required: true },
    { name: "NAME", description: "The object's name.", required: true },
  ],
  flags: [{ name: "namespace", short: "n", type: "string", value: "NS", default: "default", description: "Its namespace." }, ...ADMIN_FLAGS],
  examples: ["mesh delete destinationpolicy ledger -n shop"],
  async run(args, ctx) {
    const kind = kindArg(args.positionals[0]);
    const [name] = args.positionals.slice(1);
    const ns = namespaceArg(args)!;
    const { status, body } = await adminClient(args).call<{ error?: string }>("DELETE", `/v1/manifests/${kind}/${encodeURIComponent(ns)}/${encodeURIComponent(name!)}`);
    if (status === 404) throw new DataError(body.error ?? "not found");
    if (status !== 200) throw new MeshError(`delete refused (${status}): ${body.error}`);
    ctx.out(`${kind}/${ns}/${name} deleted`);
    return 0;
  },
};
