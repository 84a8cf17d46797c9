/**
 * Applying, listing and deleting manifests in the store. A batch is validated whole
 * before anything is written — every document against its schema, every reference
 * against the batch and the store (manifest-rules.ts) — so a bad manifest never replaces a
 * good one, and then written whole: one guarded commit (manifest-commit.ts), so it is
 * stored all or none, and never beside a change another replica made meanwhile that it
 * was not checked against. A batch larger than the store takes in one transaction is
 * refused whole. Kinds that configure one local process (ProxyConfig, ControlPlaneConfig)
 * are refused: they belong in that process's --config, not in the mesh's shared state.
 */
import { parseManifest } from "../config/manifest.ts";
import "../config/kinds/index.ts";
import { StoreError } from "../store/errors.ts";
import type { Store, WriteOp } from "../store/store.ts";
import { manifestKey } from "./keys.ts";
import { commitManifests, type Plan } from "./manifest-commit.ts";
import { batchErrors, deletedInUseErrors, manifestId, type Submitted } from "./manifest-rules.ts";
import type { ControlPlaneView, StoredManifest } from "./view.ts";

export const SHARED_KINDS = new Set(["Service", "DestinationPolicy", "AuthorizationPolicy", "RateLimitPolicy", "RequestAuthentication", "HTTPRoute"]);

export interface SubmittedDocument {
  /** Where it came from, for errors: `file#doc`. */
  source: string;
  manifest: unknown;
}

export type ApplyOutcome = "created" | "configured" | "unchanged" | "deleted";

export interface ApplyResult {
  ok: boolean;
  errors: string[];
  /** What changed (or, `unconfirmed`, what may have). */
  applied: { kind: string; namespace: string; name: string; outcome: ApplyOutcome }[];
  /** Why nothing was applied: a manifest breaks a rule, other replicas' writes kept winning, or the batch is past one store transaction. */
  refused?: "invalid" | "conflict" | "too-large";
  /** The store's answer was lost: `applied` may or may not be stored. */
  unconfirmed?: true;
}

type Parsed = Submitted & { raw: Record<string, unknown> };

/**
 * Stores `docs`, and deletes the manifests `remove` names (`Kind/namespace/name`; absent ones
 * are skipped), as one change: validated together, written together.
 */
export async function applyDocuments(store: Store, view: ControlPlaneView, docs: SubmittedDocument[], remove: string[] = []): Promise<ApplyResult> {
  const { valid, errors } = parseDocuments(docs);
  if (errors.length > 0) return refusal("invalid", errors);
  let outcome;
  try {
    outcome = await commitManifests(store, view, (v) => planApply(v, valid, remove));
  } catch (err) {
    if (err instanceof StoreError && err.code === "too-large") return refusal("too-large", [`${valid.length} manifests (and ${remove.length} deletions) are more than the store takes in one transaction; nothing was applied: apply them in smaller batches, or raise the store's limits: ${err.message}`]);
    throw err;
  }
  if (outcome.kind === "conflict") return refusal("conflict", [outcome.error]);
  if (outcome.kind === "unconfirmed") return { ...outcome.result, ok: false, errors: [`store unavailable: ${outcome.error.message}`], unconfirmed: true };
  return outcome.result;
}

/** Each document against its schema, the kinds the store takes, and the batch's own names. */
function parseDocuments(docs: SubmittedDocument[]): { valid: Parsed[]; errors: string[] } {
  const errors: string[] = [];
  const valid: Parsed[] = [];
  const seen = new Map<string, string>();
  for (const d of docs) {
    const parsed = parseManifest(d.manifest);
    if (!parsed.ok) {
      for (const i of parsed.issues) errors.push(`${d.source}${i.path ? ` ${i.path}` : ""}: ${i.message}`);
      continue;
    }
    const m = parsed.manifest;
    if (!SHARED_KINDS.has(m.kind)) {
      errors.push(`${d.source} kind: ${m.kind} configures one process; pass it to that process with --config`);
      continue;
    }
    const id = manifestId(m);
    const earlier = seen.get(id);
    if (earlier) errors.push(`${d.source} metadata.name: duplicate ${m.kind} "${m.metadata.namespace}/${m.metadata.name}", first at ${earlier}`);
    seen.set(id, d.source);
    valid.push({ source: d.source, raw: d.manifest as Record<string, unknown>, manifest: m });
  }
  return { valid, errors };
}

/** The batch and deletions against the view's manifests: refused, or the writes and what each does. */
function planApply(view: ControlPlaneView, batch: Parsed[], remove: string[]): Plan<ApplyResult> {
  const submitted = new Set(batch.map((v) => manifestId(v.manifest)));
  const deleted = new Set(remove.filter((id) => !submitted.has(id) && (view.manifests.has(id) || view.unreadable.has(id))));
  const kept = new Map<string, StoredManifest>([...view.manifests].filter(([id]) => !submitted.has(id) && !deleted.has(id)));
  const deletedManifests = [...deleted].flatMap((id) => view.manifests.get(id)?.manifest ?? []);
  const errors = [...batchErrors(kept, batch), ...deletedInUseErrors(kept, batch, deletedManifests)];
  if (errors.length > 0) return { writes: [], result: refusal("invalid", errors) };

  const writes: WriteOp[] = [];
  const applied: ApplyResult["applied"] = [];
  for (const v of batch) {
    const { kind, metadata } = v.manifest;
    const value = JSON.stringify(v.raw);
    const current = view.manifests.get(manifestId(v.manifest));
    const outcome: ApplyOutcome = current ? (JSON.stringify(current.raw) === value ? "unchanged" : "configured") : view.unreadable.has(manifestId(v.manifest)) ? "configured" : "created";
    if (outcome !== "unchanged") writes.push({ put: manifestKey(kind, metadata.namespace, metadata.name), value });
    applied.push({ kind, namespace: metadata.namespace, name: metadata.name, outcome });
  }
  for (const id of deleted) {
    const [kind, namespace, name] = id.split("/") as [string, string, string];
    writes.push({ delete: manifestKey(kind, namespace, name) });
    applied.push({ kind, namespace, name, outcome: "deleted" });
  }
  return { writes, result: { ok: true, errors: [], applied } };
}

function refusal(refused: NonNullable<ApplyResult["refused"]>, errors: string[]): ApplyResult {
  return { ok: false, errors, applied: [], refused };
}

export type DeleteResult = { ok: true } | { ok: false; status: 404 | 409; error: string };

export async function deleteManifest(store: Store, view: ControlPlaneView, kind: string, namespace: string, name: string): Promise<DeleteResult> {
  const id = `${kind}/${namespace}/${name}`;
  const outcome = await commitManifests<DeleteResult>(store, view, (v) => {
    if (!v.manifests.has(id) && !v.unreadable.has(id)) return { writes: [], result: { ok: false, status: 404, error: `no ${kind} "${namespace}/${name}"` } };
    const target = v.manifests.get(id)?.manifest;
    const inUse = target ? deletedInUseErrors(new Map([...v.manifests].filter(([other]) => other !== id)), [], [target]) : [];
    if (inUse.length > 0) return { writes: [], result: { ok: false, status: 409, error: inUse.join("; ") } };
    return { writes: [{ delete: manifestKey(kind, namespace, name) }], result: { ok: true } };
  });
  if (outcome.kind === "conflict") return { ok: false, status: 409, error: outcome.error };
  if (outcome.kind === "unconfirmed") throw outcome.error;
  return outcome.result;
}

export function listManifests(view: ControlPlaneView, kind?: string, namespace?: string, name?: string): Record<string, unknown>[] {
  return [...view.manifests.entries()]
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .filter(([, { manifest: m }]) => (!kind || m.kind === kind) && (!namespace || m.metadata.namespace === namespace) && (!name || m.metadata.name === name))
    .map(([, { raw }]) => raw);
}
