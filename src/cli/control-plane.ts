/** `mesh control-plane`: run a control-plane replica on the embedded store or on etcd. */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { loadCa } from "../ca/authority.ts";
import { createCaUnlessPresent } from "../ca/create.ts";
import type { ControlPlaneConfig } from "../config/kinds/control-plane-config.ts";
import { formatManifestError, loadManifests } from "../config/load.ts";
import { CantCreateError, DataError, errorMessage, MeshError, UsageError } from "../core/errors.ts";
import { fileInTheWay } from "../core/files.ts";
import type { Logger } from "../core/log.ts";
import { loadOrCreateTokenKey } from "../control-plane/token-key.ts";
import { startControlPlane } from "../control-plane/server.ts";
import { EtcdStore } from "../store/etcd.ts";
import { EtcdAlarms } from "../store/etcd-health.ts";
import { openSqliteStore } from "../store/sqlite.ts";
import type { Store } from "../store/store.ts";
import { str, type CommandSpec } from "./args.ts";
import { plaintextRemoteEtcd, settingsFrom, type StoreSettings } from "./control-plane-settings.ts";
import { serveUntilSignal } from "./serve-until-signal.ts";

async function loadConfig(path: string | undefined): Promise<ControlPlaneConfig["spec"] | undefined> {
  if (!path) return undefined;
  const { manifests, errors } = await loadManifests([path]);
  if (errors.length) throw new DataError(`invalid config:\n  ${errors.map(formatManifestError).join("\n  ")}`, "--config");
  const cps = manifests.filter((m) => m.manifest.kind === "ControlPlaneConfig");
  if (cps.length !== 1) throw new DataError(`holds ${cps.length} ControlPlaneConfig documents; expected one`, path);
  return (cps[0]!.manifest as ControlPlaneConfig).spec;
}

/** The admin token: given, or generated once into the data directory (0600). `where`: the flag or default it came from. */
export function adminToken(file: string, where = file): string {
  let token: string;
  try {
    if (!existsSync(file)) writeFileSync(file, randomBytes(32).toString("base64url") + "\n", { mode: 0o600, flag: "wx" });
    token = readFileSync(file, "utf8").trim();
  } catch (err) {
    throw new DataError(`cannot read or create the admin token ${file}: ${errorMessage(err)}`, where);
  }
  if (token.length < 16) throw new DataError("admin token is shorter than 16 characters", file);
  return token;
}

/** When a start-up still waiting for etcd says so. */
const ETCD_SLOW_WARNING_MS = 2_000;

/**
 * The store the settings name, and on etcd its alarms (for status); an etcd cluster must
 * answer first, or the start ends naming its endpoints.
 */
async function openStore(settings: StoreSettings, dataDir: string, log: Logger): Promise<{ store: Store; alarms?: EtcdAlarms }> {
  if (settings.type === "embedded") return { store: openSqliteStore(join(dataDir, "store"), { log }) };
  const store = new EtcdStore({ endpoints: settings.endpoints, tls: settings.tls, log });
  // The client retries for a while (an election takes seconds); say so rather than wait in silence.
  const slow = setTimeout(() => log.warn({ endpoints: settings.endpoints }, "etcd has not answered yet; still trying"), ETCD_SLOW_WARNING_MS);
  try {
    await store.revision();
  } catch (err) {
    await store.close();
    throw new MeshError(`cannot use etcd at ${settings.endpoints.join(", ")}: ${errorMessage(err)}`, settings.where);
  } finally {
    clearTimeout(slow);
  }
  return { store, alarms: new EtcdAlarms({ endpoints: settings.endpoints, tls: settings.tls }) };
}

export const controlPlaneCommand: CommandSpec = {
  name: "control-plane",
  summary: "Run the control plane: registry, config distribution, policy store and certificate signing.",
  description:
    "Sidecars register, subscribe to config and renew certificates over mTLS on --api; new sidecars\n" +
    "trade a join token and a CSR for their first certificate on --bootstrap. The admin API on --admin\n" +
    "(loopback) needs the token in <data-dir>/admin-token. Several replicas can share one etcd cluster.",
  flags: [
    { name: "config", type: "string", value: "FILE", description: "A ControlPlaneConfig manifest; flags override it." },
    { name: "api", type: "string", value: "ADDR:PORT", description: "mTLS listener for sidecars (default 0.0.0.0:15010)." },
    { name: "admin", type: "string", value: "ADDR:PORT", description: "Admin API listener, loopback only (default 127.0.0.1:15011)." },
    { name: "bootstrap", type: "string", value: "ADDR:PORT", description: "Listener for first certificates (default 0.0.0.0:15012)." },
    { name: "data-dir", type: "string", value: "DIR", description: "State directory: embedded store, admin token (default ./data)." },
    { name: "ca-dir", type: "string", value: "DIR", description: "CA from 'mesh ca init'; created if absent (default certs)." },
    { name: "trust-domain", type: "string", value: "TD", description: "Trust domain of a CA created here (default mesh.local); given with an existing CA, it must be the CA's." },
    { name: "store", type: "string", value: "TYPE", description: "embedded (default) or etcd." },
    { name: "etcd-endpoint", type: "strings", value: "URL", description: "An etcd member, e.g. https://10.0.0.1:2379; repeat for each." },
    { name: "etcd-ca", type: "string", value: "FILE", description: "The CA (PEM) that signed the etcd members' certificates (https:// endpoints; default: the system's)." },
    { name: "etcd-cert", type: "string", value: "FILE", description: "Client certificate (PEM) for etcd members that ask for one (--client-cert-auth); with --etcd-key." },
    { name: "etcd-key", type: "string", value: "FILE", description: "The key of --etcd-cert (PEM)." },
    { name: "policies", type: "string", value: "DIR", description: "Manifests loaded at start and watched (default policies, if present)." },
    { name: "cert-ttl", type: "string", value: "DURATION", description: "Lifetime of signed workload certificates, 2s to 720h (default 24h)." },
    { name: "lease-ttl", type: "string", value: "DURATION", description: "How long a registration outlives its last heartbeat, at least 1s (default 10s)." },
    { name: "max-endpoints-per-service", type: "string", value: "N", description: "Endpoints one service may have registered at once, its replicas; past it a registration gets 429 (default 256)." },
    { name: "admin-identity", type: "strings", value: "SPIFFE-ID", description: "An identity allowed to use the admin API over mTLS; repeatable." },
    { name: "max-connections", type: "string", value: "N", description: "Connections the mTLS API listener holds before closing new ones at accept (default: a sixth of the open-files limit)." },
    { name: "admin-token-file", type: "string", value: "FILE", description: "The admin token (default <data-dir>/admin-token, generated once)." },
  ],
  examples: [
    "mesh control-plane",
    "mesh control-plane --store etcd --etcd-endpoint https://10.0.0.1:2379 --etcd-endpoint https://10.0.0.2:2379 --etcd-ca etcd-ca.pem --etcd-cert cp.pem --etcd-key cp-key.pem",
  ],
  async run(args, ctx) {
    const cfg = await loadConfig(str(args, "config"));
    const settings = settingsFrom(args, cfg);
    const exposed = plaintextRemoteEtcd(settings.store);
    if (exposed.length > 0)
      ctx.log.warn({ endpoints: exposed }, "etcd reached without TLS off this host: anyone who can reach it can change the mesh's policies and registrations; serve it over TLS with --client-cert-auth and give --etcd-ca, --etcd-cert and --etcd-key");
    const { caDir } = settings;
    // Checked before a CA is created: a start that cannot keep its state should leave none.
    const inTheWay = fileInTheWay(settings.dataDir);
    if (inTheWay !== undefined) throw new UsageError(`${inTheWay} is not a directory`, "--data-dir");
    const made = await createCaUnlessPresent(caDir, settings.trustDomain);
    const ca = await loadCa(caDir);
    // Checked before the data directory is made: a CA keeps the trust domain it was made with.
    if (settings.trustDomainFlag !== undefined && settings.trustDomainFlag !== ca.trustDomain)
      throw new UsageError(`the CA in ${caDir} is of trust domain "${ca.trustDomain}", not "${settings.trustDomainFlag}"; a CA keeps its trust domain (give another --ca-dir for a new one)`, "--trust-domain");
    if (made) ctx.log.warn({ caDir, trustDomain: settings.trustDomain }, "no CA found; created a new one");
    try {
      mkdirSync(settings.dataDir, { recursive: true, mode: 0o700 });
    } catch (err) {
      throw new CantCreateError(`cannot create ${settings.dataDir}: ${errorMessage(err)}`, "--data-dir");
    }
    const tokenKey = await loadOrCreateTokenKey(caDir);
    const token = adminToken(settings.adminTokenFile.path, settings.adminTokenFile.where);
    const { store, alarms } = await openStore(settings.store, settings.dataDir, ctx.log);
    const cp = await startControlPlane({
      ...settings.options,
      store,
      storeKind: settings.store.type,
      storeAlarms: alarms,
      ca,
      tokenKey,
      adminToken: token,
      policiesDir: settings.policiesDir,
      log: ctx.log,
    });
    return serveUntilSignal(ctx, { trustDomain: ca.trustDomain, bundle: ca.paths.bundle, ...cp.ports }, "stopping", async () => {
      await cp.stop();
      return 0;
    });
  },
};
