/** `mesh control-plane`: run a control-plane replica on the embedded store or on etcd. */
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { randomBytes } from "node:crypto";
import { loadCa } from "../ca/authority.ts";
import { createCaFiles } from "../ca/create.ts";
import { caPaths } from "../ca/layout.ts";
import { DEFAULT_LEAF_TTL_MS, MAX_LEAF_TTL_MS } from "../ca/profiles.ts";
import { CONTROL_PLANE_ADMIN_ELSEWHERE, type ControlPlaneConfig } from "../config/kinds/control-plane-config.ts";
import { formatManifestError, loadManifests } from "../config/load.ts";
import { DataError, errorMessage, MeshError, UsageError } from "../core/errors.ts";
import type { Logger } from "../core/log.ts";
import { loadOrCreateTokenKey } from "../control-plane/token-key.ts";
import { startControlPlane, type ControlPlaneOptions } from "../control-plane/server.ts";
import { parseSpiffeId, trustDomainProblem } from "../pki/spiffe.ts";
import { EtcdStore } from "../store/etcd.ts";
import { openSqliteStore } from "../store/sqlite.ts";
import type { Store } from "../store/store.ts";
import { str, strs, type CommandSpec, type Parsed } from "./args.ts";
import { countFlag, durationFlag, loopbackListen, parseListen, timerFlag, type Listen } from "./flags.ts";
import { serveUntilSignal } from "./serve-until-signal.ts";

export const ADMIN_TOKEN_FILE = "admin-token";

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

/**
 * Sidecars renew at half life, and a renewal waits at least a second (timerDelay's floor):
 * a shorter certificate would lapse before its renewal is due.
 */
const MIN_CERT_TTL_MS = 2_000;
/** etcd grants leases in whole seconds, and sidecars heartbeat at a third of the TTL. */
const MIN_LEASE_TTL_MS = 1_000;
/** When a start-up still waiting for etcd says so. */
const ETCD_SLOW_WARNING_MS = 2_000;

type StoreSettings = { type: "embedded" } | { type: "etcd"; endpoints: string[]; where: string };

/** Everything the flags and the config file ask for, checked before anything is written or started. */
interface Settings {
  dataDir: string;
  caDir: string;
  /** Of a CA created here; an existing CA keeps its own. */
  trustDomain: string;
  store: StoreSettings;
  policiesDir: string | undefined;
  adminTokenFile: { path: string; where: string };
  options: Omit<ControlPlaneOptions, "store" | "storeKind" | "ca" | "tokenKey" | "adminToken" | "policiesDir" | "log">;
}

/**
 * A lifetime from its flag, else from the file's field, else the default; held to the same
 * bounds wherever it came from (the file's schema knows none), and the error names that place.
 */
function lifetimeMs(flagText: string | undefined, flag: string, parse: (text: string, flag: string) => number, fileMs: number | undefined, field: string, fallbackMs: number, problem: (ms: number) => string | undefined): number {
  const ms = flagText !== undefined ? parse(flagText, flag) : fileMs ?? fallbackMs;
  const bad = problem(ms);
  if (bad === undefined) return ms;
  throw flagText !== undefined ? new UsageError(bad, flag) : new DataError(bad, `--config spec.${field}`);
}

function certTtlProblem(ms: number): string | undefined {
  if (ms > MAX_LEAF_TTL_MS) return `TTL exceeds the maximum of ${MAX_LEAF_TTL_MS / 3600_000}h, the longest a workload certificate is signed for`;
  if (ms < MIN_CERT_TTL_MS) return `TTL is below the minimum of ${MIN_CERT_TTL_MS / 1000}s: sidecars renew at half life, and no renewal comes sooner than a second`;
  return undefined;
}

function leaseTtlProblem(ms: number): string | undefined {
  if (ms < MIN_LEASE_TTL_MS) return `TTL is below the minimum of ${MIN_LEASE_TTL_MS / 1000}s: etcd grants leases in whole seconds, and sidecars heartbeat at a third of it`;
  return undefined;
}

/** An etcd member's client URL: the gateway's paths are appended to it, so scheme, host and port only. */
function etcdEndpointProblem(text: string): string | undefined {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return `expected a URL like http://127.0.0.1:2379, got "${text}"`;
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") return `expected an http:// or https:// URL, got "${text}"`;
  if (url.username || url.password || url.pathname !== "/" || url.search || url.hash) return `expected only scheme, host and port, like http://127.0.0.1:2379, got "${text}"`;
  if (url.port === "0") return `expected port 1-65535, got "${text}"`;
  return undefined;
}

function storeSettings(args: Parsed, cfg: ControlPlaneConfig["spec"] | undefined): StoreSettings {
  const type = str(args, "store") ?? cfg?.store.type ?? "embedded";
  if (type !== "embedded" && type !== "etcd") throw new UsageError(`expected embedded or etcd, got "${type}"`, "--store");
  const flagEndpoints = strs(args, "etcd-endpoint");
  for (const e of flagEndpoints) {
    const problem = etcdEndpointProblem(e);
    if (problem) throw new UsageError(problem, "--etcd-endpoint");
  }
  if (type === "embedded") {
    if (flagEndpoints.length) throw new UsageError("only used with --store etcd (or store.type etcd in --config)", "--etcd-endpoint");
    return { type };
  }
  if (flagEndpoints.length) return { type, endpoints: flagEndpoints, where: "--etcd-endpoint" };
  const endpoints = cfg?.store.endpoints ?? [];
  if (!endpoints.length) throw new UsageError("--store etcd needs at least one --etcd-endpoint", "--store");
  for (const [i, e] of endpoints.entries()) {
    const problem = etcdEndpointProblem(e);
    if (problem) throw new DataError(problem, `--config spec.store.endpoints[${i}]`);
  }
  return { type, endpoints, where: "--config spec.store.endpoints" };
}

function adminIdentities(args: Parsed, cfg: ControlPlaneConfig["spec"] | undefined): string[] {
  const fromFile = cfg?.adminIdentities ?? [];
  fromFile.forEach((id, i) => {
    const parsed = parseSpiffeId(id);
    if (!parsed.ok) throw new DataError(parsed.reason, `--config spec.adminIdentities[${i}]`);
  });
  const fromFlags = strs(args, "admin-identity");
  for (const id of fromFlags) {
    const parsed = parseSpiffeId(id);
    if (!parsed.ok) throw new UsageError(parsed.reason, "--admin-identity");
  }
  return [...fromFile, ...fromFlags];
}

function adminTokenFile(args: Parsed, dataDir: string): Settings["adminTokenFile"] {
  const flag = str(args, "admin-token-file");
  if (flag === undefined) return { path: join(dataDir, ADMIN_TOKEN_FILE), where: "--data-dir" };
  // The data directory is created here; the flag's directory is not: it is the operator's (a mounted secret, say).
  const dir = dirname(flag);
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new UsageError(`no such directory ${dir} for the admin token file ${flag}`, "--admin-token-file");
  return { path: flag, where: "--admin-token-file" };
}

function settingsFrom(args: Parsed, cfg: ControlPlaneConfig["spec"] | undefined): Settings {
  const listen = (flag: string, fromFile: Listen | undefined, fallback: string, parse = parseListen) =>
    str(args, flag) !== undefined ? parse(str(args, flag)!, `--${flag}`) : fromFile ?? parseListen(fallback, `--${flag}`);
  const trustDomainFlag = str(args, "trust-domain");
  const badTrustDomain = trustDomainFlag === undefined ? undefined : trustDomainProblem(trustDomainFlag);
  if (badTrustDomain) throw new UsageError(badTrustDomain, "--trust-domain");
  const dataDir = str(args, "data-dir") ?? cfg?.dataDir ?? "./data";
  const policiesFlag = str(args, "policies");
  if (policiesFlag !== undefined && !existsSync(policiesFlag)) throw new UsageError(`no such directory "${policiesFlag}"`, "--policies");
  const policiesDir = policiesFlag ?? cfg?.policiesDir ?? "policies";
  return {
    dataDir,
    caDir: str(args, "ca-dir") ?? cfg?.ca.dir ?? "certs",
    trustDomain: trustDomainFlag ?? cfg?.trustDomain ?? "mesh.local",
    store: storeSettings(args, cfg),
    policiesDir: existsSync(policiesDir) ? policiesDir : undefined,
    adminTokenFile: adminTokenFile(args, dataDir),
    options: {
      adminIdentities: adminIdentities(args, cfg),
      api: listen("api", cfg?.api, "0.0.0.0:15010"),
      admin: listen("admin", cfg?.admin, "127.0.0.1:15011", (text, flag) => loopbackListen(text, flag, CONTROL_PLANE_ADMIN_ELSEWHERE)),
      bootstrap: listen("bootstrap", cfg?.bootstrap, "0.0.0.0:15012"),
      certTtlMs: lifetimeMs(str(args, "cert-ttl"), "--cert-ttl", durationFlag, cfg?.certTtl, "certTtl", DEFAULT_LEAF_TTL_MS, certTtlProblem),
      leaseTtlMs: lifetimeMs(str(args, "lease-ttl"), "--lease-ttl", timerFlag, cfg?.leaseTtl, "leaseTtl", 10_000, leaseTtlProblem),
      maxEndpointsPerService: countFlag(str(args, "max-endpoints-per-service"), "--max-endpoints-per-service", "endpoints") ?? cfg?.maxEndpointsPerService,
      maxConnections: countFlag(str(args, "max-connections"), "--max-connections", "connections") ?? cfg?.maxConnections,
    },
  };
}

/** The store the settings name; an etcd cluster must answer first, or the start ends naming its endpoints. */
async function openStore(settings: StoreSettings, dataDir: string, log: Logger): Promise<Store> {
  if (settings.type === "embedded") return openSqliteStore(join(dataDir, "store"), { log });
  const store = new EtcdStore({ endpoints: settings.endpoints, log });
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
  return store;
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
    { name: "trust-domain", type: "string", value: "TD", description: "Trust domain of a CA created here (default mesh.local)." },
    { name: "store", type: "string", value: "TYPE", description: "embedded (default) or etcd." },
    { name: "etcd-endpoint", type: "strings", value: "URL", description: "An etcd member, e.g. http://127.0.0.1:2379; repeat for each." },
    { name: "policies", type: "string", value: "DIR", description: "Manifests loaded at start and watched (default policies, if present)." },
    { name: "cert-ttl", type: "string", value: "DURATION", description: "Lifetime of signed workload certificates, 2s to 720h (default 24h)." },
    { name: "lease-ttl", type: "string", value: "DURATION", description: "How long a registration outlives its last heartbeat, at least 1s (default 10s)." },
    { name: "max-endpoints-per-service", type: "string", value: "N", description: "Endpoints one service may have registered at once, its replicas; past it a registration gets 429 (default 256)." },
    { name: "admin-identity", type: "strings", value: "SPIFFE-ID", description: "An identity allowed to use the admin API over mTLS; repeatable." },
    { name: "max-connections", type: "string", value: "N", description: "Connections the mTLS API listener holds before closing new ones at accept (default: a sixth of the open-files limit)." },
    { name: "admin-token-file", type: "string", value: "FILE", description: "The admin token (default <data-dir>/admin-token, generated once)." },
  ],
  examples: ["mesh control-plane", "mesh control-plane --store etcd --etcd-endpoint http://10.0.0.1:2379 --etcd-endpoint http://10.0.0.2:2379"],
  async run(args, ctx) {
    const cfg = await loadConfig(str(args, "config"));
    const settings = settingsFrom(args, cfg);
    mkdirSync(settings.dataDir, { recursive: true, mode: 0o700 });
    const { caDir } = settings;
    if (!existsSync(caPaths(caDir).intermediateCert)) {
      await createCaFiles(caDir, settings.trustDomain);
      ctx.log.warn({ caDir, trustDomain: settings.trustDomain }, "no CA found; created a new one");
    }
    const ca = await loadCa(caDir);
    const tokenKey = await loadOrCreateTokenKey(caDir);
    const token = adminToken(settings.adminTokenFile.path, settings.adminTokenFile.where);
    const store = await openStore(settings.store, settings.dataDir, ctx.log);
    const cp = await startControlPlane({
      ...settings.options,
      store,
      storeKind: settings.store.type,
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
