/**
 * The operator's API: manifests, join tokens, registered endpoints and proxy status.
 * Every route under /v1 needs an admin credential — the bearer token on the loopback
 * admin port, or an admin SPIFFE identity on the mTLS port; a workload certificate
 * gets 403 and no credential gets 401. Reads need it too: manifests describe the mesh.
 */
import { timingSafeEqual } from "node:crypto";
import { Hono, type Context, type MiddlewareHandler } from "hono";
import { z } from "zod";
import { dnsLabel } from "../../config/common.ts";
import { parseDuration } from "../../config/duration.ts";
import type { AuditCounts, AuditLog } from "../audit.ts";
import { DEFAULT_JOIN_TTL_MS, issueJoinToken, JoinTokenError, type TokenKey } from "../join-token.ts";
import { listJoinTokens, MAX_JOIN_USES, recordJoinToken, revokeJoinToken } from "../join-token-records.ts";
import { applyDocuments, deleteManifest, listManifests } from "../manifest-store.ts";
import { listProxyStatus } from "../proxy-status.ts";
import { listReplicas } from "../replica-presence.ts";
import type { RotationStatus } from "../rotation-status.ts";
import type { Subscriptions } from "../subscriptions.ts";
import { isControlPlane } from "../well-known.ts";
import type { ControlPlaneView, ViewSync } from "../view.ts";
import { StoreError } from "../../store/errors.ts";
import type { Store } from "../../store/store.ts";
import { BadRequest, body, onError } from "./http.ts";

export interface AdminApiDeps {
  store: Store;
  view: ControlPlaneView;
  subscriptions: Subscriptions;
  tokenKey: TokenKey;
  trustDomain: string;
  ready: () => boolean;
  audit: AuditLog;
  /** What `mesh check` reports on: CA validity, the policies directory's last load. */
  status: () => ControlPlaneStatus;
}

export interface ControlPlaneStatus {
  /** This replica's id among the store's replica records (GET /v1/replicas); absent from control planes older than them. */
  replica?: string;
  trustDomain: string;
  /** End times (ISO); `servingCertTtlMs`: the lifetime the control plane's own certificate is issued for, renewed at half. */
  /** The rotation fields are absent from control planes older than them (rotation-status.ts). */
  ca: { root: string; intermediate: string; servingCert: string; servingCertTtlMs?: number } & Partial<RotationStatus>;
  policies?: { dir: string; loadedAt?: string; errors: string[]; applied: number };
  store: string;
  /** The API, bootstrap and admin listeners: connections open, their limit, and those closed at accept since start. */
  listeners: Record<"api" | "bootstrap" | "admin", ListenerLoad>;
  /** Certificates this replica signed and refused since it started, by path. */
  certificates: AuditCounts;
  /** Whether this replica's view follows the store; while it does not (re-listing after its watch ended), the last view keeps serving. */
  view?: ViewSync;
}

export interface ListenerLoad {
  open: number;
  limit: number;
  refusedOverLimit: number;
}

/** A refused apply's status: a rule broken (422), lost races to other replicas' writes (409), past one store transaction (413). */
const APPLY_REFUSED = { invalid: 422, conflict: 409, "too-large": 413 } as const;
const Apply = z.strictObject({ documents: z.array(z.strictObject({ source: z.string().max(4096), manifest: z.unknown() })).min(1).max(10_000) });
const TokenRequest = z
  .strictObject({
    namespace: dnsLabel("namespace").default("default"),
    service: dnsLabel("service"),
    ttl: z.string().optional(),
    uses: z.number().int().min(1).max(MAX_JOIN_USES).default(1),
  })
  .refine((r) => !isControlPlane(r.namespace, r.service), { path: ["service"], message: "the control plane's own identity, which sidecars trust as the control plane: no workload is given it" });
const TOKEN_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Bearer-token check in constant time, so the token cannot be guessed byte by byte. */
export function bearerAuth(token: string): MiddlewareHandler {
  const expected = Buffer.from(token);
  return async (c, next) => {
    const given = Buffer.from((c.req.header("authorization") ?? "").replace(/^Bearer\s+/i, ""));
    if (given.length === 0) return c.json({ error: "admin credential required: Authorization: Bearer <token>" }, 401);
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) return c.json({ error: "admin credential refused" }, 401);
    await next();
  };
}

/** Who made an admin call, for the audit log: the admin identity over mTLS, or the bearer token's holder. */
function adminOf(c: Context): string {
  return (c.env as { identity?: string } | undefined)?.identity ?? "admin token";
}

export function adminApi(deps: AdminApiDeps, authorize: MiddlewareHandler): Hono {
  const app = new Hono();
  app.onError(onError);
  app.get("/live", (c) => c.text("live\n"));
  app.get("/ready", (c) => (deps.ready() ? c.text("ready\n") : c.text("not ready\n", 503)));
  app.use("/v1/*", authorize);

  app.get("/v1/manifests", (c) => c.json({ items: listManifests(deps.view, c.req.query("kind"), c.req.query("namespace"), c.req.query("name")) }));
  app.put("/v1/manifests", async (c) => {
    const { documents } = await body(c, Apply);
    const result = await applyDocuments(deps.store, deps.view, documents);
    const changes = result.applied.filter((a) => a.outcome !== "unchanged").map((a) => `${a.kind} ${a.namespace}/${a.name} ${a.outcome}`);
    deps.audit.manifestsChanged({ changes, by: adminOf(c), ...(result.unconfirmed ? { unconfirmed: true } : {}) });
    if (result.unconfirmed) return c.json({ ...result, error: result.errors.join("; ") }, 503);
    return c.json(result, result.ok ? 200 : APPLY_REFUSED[result.refused ?? "invalid"]);
  });
  app.delete("/v1/manifests/:kind/:namespace/:name", async (c) => {
    const { kind, namespace, name } = c.req.param();
    const changes = [`${kind} ${namespace}/${name} deleted`];
    const result = await deleteManifest(deps.store, deps.view, kind, namespace, name).catch((err: unknown) => {
      if (err instanceof StoreError && err.outcomeUnknown) deps.audit.manifestsChanged({ changes, by: adminOf(c), unconfirmed: true });
      throw err;
    });
    if (result.ok) deps.audit.manifestsChanged({ changes, by: adminOf(c) });
    return result.ok ? c.json({ deleted: { kind, namespace, name } }) : c.json({ error: result.error }, result.status);
  });

  app.post("/v1/join-tokens", async (c) => {
    const req = await body(c, TokenRequest);
    let ttlMs = DEFAULT_JOIN_TTL_MS;
    if (req.ttl !== undefined) {
      try {
        ttlMs = parseDuration(req.ttl);
      } catch (err) {
        throw new BadRequest(`ttl: ${(err as Error).message}`);
      }
    }
    const grant = { trustDomain: deps.trustDomain, namespace: req.namespace, service: req.service };
    const issued = await issueJoinToken(deps.tokenKey, grant, ttlMs, req.uses).catch((err: unknown) => {
      throw err instanceof JoinTokenError ? new BadRequest(`ttl: ${err.message}`) : err;
    });
    await recordJoinToken(deps.store, { ...issued, uses: req.uses });
    const expiresAt = new Date(issued.expiresAt).toISOString();
    deps.audit.tokenMinted({ tokenId: issued.jti, spiffeId: issued.spiffeId, uses: req.uses, expiresAt, by: adminOf(c) });
    return c.json({ token: issued.token, id: issued.jti, identity: issued.spiffeId, uses: req.uses, expiresAt });
  });
  app.get("/v1/join-tokens", async (c) => c.json({ items: await listJoinTokens(deps.store) }));
  app.delete("/v1/join-tokens/:id", async (c) => {
    const id = c.req.param("id");
    if (!TOKEN_ID.test(id)) throw new BadRequest(`"${id}" is not a token id (a UUID, as 'mesh join-token list' shows)`);
    if (!(await revokeJoinToken(deps.store, id))) return c.json({ error: `no join token ${id} (expired, revoked, or never issued)` }, 404);
    deps.audit.tokenRevoked({ tokenId: id, by: adminOf(c) });
    return c.json({ revoked: id });
  });

  app.get("/v1/status", (c) => c.json({ ...deps.status(), view: deps.view.sync() }));
  app.get("/v1/endpoints", (c) => c.json({ items: [...deps.view.endpoints.values()] }));
  // Read from the store, not the view: whoever asks (a root rotation's --complete) wants every replica alive now.
  app.get("/v1/replicas", async (c) => c.json({ items: await listReplicas(deps.store) }));
  app.get("/v1/proxies", async (c) => {
    const items = await listProxyStatus(deps.store);
    const latest = (p: (typeof items)[number]) => deps.subscriptions.current({ namespace: p.namespace, service: p.service, calls: p.calls }).version;
    return c.json({ items: items.map((p) => ({ ...p, latest: latest(p) })) });
  });

  app.all("*", (c) => c.json({ error: `no route ${c.req.method} ${c.req.path}` }, 404));
  return app;
}
