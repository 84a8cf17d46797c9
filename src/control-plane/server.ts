/**
 * Assembles a control-plane replica over a store: the view it serves from, the mTLS API
 * for sidecars (through the same identity bridge the proxy's inbound uses), the
 * bootstrap port for first certificates, and the loopback admin API. Any number of
 * replicas can share one store; each serves any proxy.
 */
import type { Server } from "bun";
import { asCertificate, type LoadedCa } from "../ca/authority.ts";
import type { Logger } from "../core/log.ts";
import type { Store } from "../store/store.ts";
import { TlsBridge, type BridgeTls } from "../proxy/transport/tls-bridge.ts";
import { ConnectionBudget, connectionLimit, limitWarning, openFilesLimit } from "../core/connection-budget.ts";
import { AuditLog } from "./audit.ts";
import { adminApi, bearerAuth, type ControlPlaneStatus } from "./api/admin-api.ts";
import { bootstrapApi } from "./api/bootstrap-api.ts";
import { proxyApi } from "./api/proxy-api.ts";
import { issueServingCert, type ServingCert } from "./identity.ts";
import { renewServing } from "./serving-renewal.ts";
import { followCaBundle } from "./ca-bundle-follow.ts";
import { rotationStatus } from "./rotation-status.ts";
import { ReplicaPresence } from "./replica-presence.ts";
import type { TokenKey } from "./join-token.ts";
import { PolicyDir } from "./policy-dir.ts";
import { Registry } from "./registry.ts";
import { CertificateSigner } from "./signer.ts";
import { Subscriptions } from "./subscriptions.ts";
import { ControlPlaneView } from "./view.ts";
import { bindNamed } from "../core/bind-error.ts";
import { reportingErrors } from "../store/error-reporting.ts";
import { StoreHealthMonitor, type AlarmSource, type StoreHealth } from "./store-health.ts";

export interface Listen {
  address: string;
  port: number;
}

export interface ControlPlaneOptions {
  store: Store;
  /** "embedded" or "etcd", for status. */
  storeKind: string;
  /** etcd's alarms, for status; none on the embedded store. */
  storeAlarms?: AlarmSource;
  ca: LoadedCa;
  tokenKey: TokenKey;
  adminToken: string;
  /** SPIFFE IDs allowed to use the admin API over mTLS (under /admin). */
  adminIdentities: string[];
  api: Listen;
  bootstrap: Listen;
  admin: Listen;
  certTtlMs: number;
  leaseTtlMs: number;
  /** Endpoints one service may have registered at once. */
  maxEndpointsPerService?: number;
  policiesDir?: string;
  /** Connections the mTLS API listener may hold; default a sixth of the open-files limit (each takes three). */
  maxConnections?: number;
  log: Logger;
}

/** One identity's connections are at most this fraction (1/N) of the API listener's. */
const IDENTITY_SHARE_OF_CONNECTIONS = 4;
/** The descriptors the API listener may take, three per connection (tls-bridge.ts); the store, bootstrap and admin keep the rest. */
const API_SHARE_OF_FDS = 0.5;
/** The bootstrap port's share: a sidecar uses it once, and a flood on it must leave the API its own. */
const BOOTSTRAP_SHARE_OF_FDS = 0.25;
const DESCRIPTORS_PER_API_CONNECTION = 3;
/** The admin port's: operators and `mesh` commands, a handful at a time; a flood there must not take the API's descriptors. */
const ADMIN_CONNECTIONS = 64;

export interface RunningControlPlane {
  ports: { api: number; bootstrap: number; admin: number };
  stop(): Promise<void>;
}

const MAX_POLL_WAIT_MS = 30_000;

/**
 * Bun.serve's idle timeout (10 s by default, which also closes idle and dribbling clients)
 * cuts a request still being handled too: an admin read waiting out the store's retry
 * window (15 s, an etcd outage) is given this long instead, so it gets its 503 and reason.
 */
const STORE_WAIT_IDLE_S = 30;

export async function startControlPlane(opts: ControlPlaneOptions): Promise<RunningControlPlane> {
  const { log } = opts;
  const storeHealth = new StoreHealthMonitor(opts.storeAlarms);
  // Every store failure any part of this replica meets shows in its status.
  const store = reportingErrors(opts.store, (err) => storeHealth.record(err));
  const view = new ControlPlaneView(store, log);
  await view.start();
  const signer = new CertificateSigner(opts.ca, opts.certTtlMs);
  const audit = new AuditLog(log);
  const subscriptions = new Subscriptions(view, () => signer.bundle);
  const registry = new Registry(store, opts.leaseTtlMs, opts.maxEndpointsPerService);
  const policies = opts.policiesDir ? new PolicyDir(opts.policiesDir, store, view, log) : undefined;
  await policies?.start();
  let stopping = false;

  // As long-lived as the workloads' certificates, and renewed as they are (serving-renewal.ts).
  const serving = renewServing(opts.ca, opts.certTtlMs, await issueServingCert(opts.ca, opts.certTtlMs), (next) => {
    bridge.rotate(servingTls(next));
    bootBridge.rotate(servingTls(next));
  }, log);
  // A root rotation's bundle reaches sidecars while this replica still signs under the root it started with.
  const bundleFollow = followCaBundle(opts.ca, (roots) => {
    signer.useBundle(roots);
    bridge.rotate(servingTls(serving.current));
    bootBridge.rotate(servingTls(serving.current));
    subscriptions.wake();
  }, log);
  const servingTls = (cert: ServingCert): BridgeTls => ({ cert: cert.chainPem, key: cert.keyPem, ca: signer.bundle, trustDomain: opts.ca.trustDomain, notAfterMs: cert.notAfter.getTime() });
  const status = (): ControlPlaneStatus & { storeHealth: StoreHealth } => ({
    replica: presence.record.id,
    trustDomain: opts.ca.trustDomain,
    ca: { root: opts.ca.root.notAfter.toISOString(), intermediate: opts.ca.intermediate.cert.notAfter.toISOString(), servingCert: serving.current.notAfter.toISOString(), servingCertTtlMs: opts.certTtlMs, ...rotationStatus(opts.ca, signer, bundleFollow, view.endpoints.values()) },
    policies: policies?.status,
    store: opts.storeKind,
    storeHealth: storeHealth.report(),
    listeners: {
      api: { open: budget.inUse, limit: budget.limit, refusedOverLimit: bridge.refusedOverLimit },
      bootstrap: { open: bootBudget.inUse, limit: bootBudget.limit, refusedOverLimit: bootBridge.refusedOverLimit },
      admin: { open: adminBudget.inUse, limit: adminBudget.limit, refusedOverLimit: adminBridge.refusedOverLimit },
    },
    certificates: audit.counts,
  });
  const adminDeps = { store, view, subscriptions, tokenKey: opts.tokenKey, trustDomain: opts.ca.trustDomain, ready: () => !stopping, status, audit };
  const admin = adminApi(adminDeps, bearerAuth(opts.adminToken));
  const adminByIdentity = adminApi(adminDeps, async (c, next) => {
    const identity = (c.env as { identity?: string } | undefined)?.identity;
    if (!identity || !opts.adminIdentities.includes(identity)) return c.json({ error: `${identity ?? "caller"} is not an admin identity` }, 403);
    await next();
  });
  // status() is synchronous (admin-api.ts) and reading etcd's alarms is not: they are brought
  // up to date (cached, and bounded by a short timeout) before a status request reaches it.
  const freshen = async (path: string) => {
    if (path === "/v1/status") await storeHealth.refresh();
  };
  const proxies = proxyApi({ store, registry, subscriptions, signer, audit, maxWaitMs: MAX_POLL_WAIT_MS });

  const fds = openFilesLimit();
  const budget = new ConnectionBudget(opts.maxConnections ?? connectionLimit(fds, API_SHARE_OF_FDS, DESCRIPTORS_PER_API_CONNECTION));
  const overLimit = limitWarning(log, "mesh check and /v1/status");
  const bridge = new TlsBridge(
    servingTls(serving.current),
    {
      onRefused: (reason) => log.debug({ reason }, "refused API TLS peer"),
      onOpen: () => undefined,
      onClose: () => undefined,
      onOverLimit: () => overLimit("api", budget),
    },
    // No one identity (a service's replicas together) holds more than a quarter of the API's connections.
    { budget, maxPerIdentity: Math.max(1, Math.floor(budget.limit / IDENTITY_SHARE_OF_CONNECTIONS)) },
  );
  const inner: Server<undefined> = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    idleTimeout: 60, // longer than a config poll is held
    fetch(req, server) {
      const peer = bridge.peerOf(server.requestIP(req));
      const identity = peer?.spiffeId;
      if (!identity) return new Response("not through the mTLS listener\n", { status: 403 });
      const url = new URL(req.url);
      if (url.pathname.startsWith("/admin/")) {
        url.pathname = url.pathname.slice("/admin".length);
        return freshen(url.pathname).then(() => adminByIdentity.fetch(new Request(url, req), { identity }));
      }
      return proxies.fetch(req, { identity, peer: peer.address, certificate: peer.certificate });
    },
  });
  const apiPort = bindNamed("api listener", opts.api.address, opts.api.port, () => bridge.listen(opts.api.address, opts.api.port, inner.port!));
  // The bootstrap port takes any TLS client (a sidecar has no certificate yet): through a bridge for its limit and handshake timeout.
  const bootBudget = new ConnectionBudget(connectionLimit(fds, BOOTSTRAP_SHARE_OF_FDS, DESCRIPTORS_PER_API_CONNECTION));
  const bootBridge = new TlsBridge(
    servingTls(serving.current),
    { onRefused: (reason) => log.debug({ reason }, "refused bootstrap TLS client"), onOpen: () => undefined, onClose: () => undefined, onOverLimit: () => overLimit("bootstrap", bootBudget) },
    { budget: bootBudget, clientCertificates: false },
  );
  const bootstrap = bootstrapApi({ store, signer, tokenKey: opts.tokenKey, audit });
  const boot = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: (req, server) => bootstrap.fetch(req, { peer: bootBridge.peerOf(server.requestIP(req))?.address }) });
  const bootPort = bindNamed("bootstrap listener", opts.bootstrap.address, opts.bootstrap.port, () => bootBridge.listen(opts.bootstrap.address, opts.bootstrap.port, boot.port!));
  // Plain HTTP, but through a bridge all the same: Bun.serve has no accept cap.
  const adminBudget = new ConnectionBudget(ADMIN_CONNECTIONS);
  const adminBridge = new TlsBridge(undefined, { onRefused: () => undefined, onOpen: () => undefined, onClose: () => undefined, onOverLimit: () => overLimit("admin", adminBudget) }, { budget: adminBudget });
  const adminServer = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    fetch: async (req, server) => {
      // A read may wait out the store's retry window; it has no body to dribble, so it gets longer than the idle timeout.
      if (req.method === "GET") server.timeout(req, STORE_WAIT_IDLE_S);
      await freshen(new URL(req.url).pathname);
      return admin.fetch(req);
    },
  });
  const adminPort = bindNamed("admin listener", opts.admin.address, opts.admin.port, () => adminBridge.listen(opts.admin.address, opts.admin.port, adminServer.port!));
  const presence = new ReplicaPresence(store, { api: `${opts.api.address}:${apiPort}`, rootKeyId: asCertificate(opts.ca.root).known.subjectKeyId, intermediateKeyId: asCertificate(opts.ca.intermediate.cert).known.subjectKeyId }, log);
  await presence.start();
  log.info({ api: apiPort, bootstrap: bootPort, admin: adminPort, trustDomain: opts.ca.trustDomain, replica: presence.record.id }, "control plane ready");

  return {
    ports: { api: apiPort, bootstrap: bootPort, admin: adminPort },
    async stop() {
      stopping = true;
      // First: a rotation waiting on this replica's restart sees it gone at once.
      await presence.stop();
      serving.stop();
      bundleFollow.stop();
      policies?.stop();
      subscriptions.closeAll();
      bridge.stopAccepting();
      bootBridge.stopAccepting();
      adminBridge.stopAccepting();
      await Promise.all([inner.stop(false), boot.stop(false), adminServer.stop(false)]);
      bridge.closeAll();
      bootBridge.closeAll();
      adminBridge.closeAll();
      view.stop();
      audit.flush();
      await store.close();
    },
  };
}
