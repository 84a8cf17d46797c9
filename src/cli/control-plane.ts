/** `mesh control-plane`: run a control-plane replica on the embedded store or on etcd. */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { loadCa } from "../ca/authority.ts";
import { createCaFiles } from "../ca/create.ts";
import { caPaths } from "../ca/layout.ts";
import { CONTROL_PLANE_ADMIN_ELSEWHERE, type ControlPlaneConfig } from "../config/kinds/control-plane-config.ts";
import { formatManifestError, loadManifests } from "../config/load.ts";
import { DataError, UsageError } from "../core/errors.ts";
import type { Logger } from "../core/log.ts";
import { loadOrCreateTokenKey } from "../control-plane/token-key.ts";
import { startControlPlane } from "../control-plane/server.ts";
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

/** The admin token: given, or generated once into the data directory (0600). */
export function adminToken(file: string): string {
  if (!existsSync(file)) writeFileSync(file, randomBytes(32).toString("base64url") + "\n", { mode: 0o600, flag: "wx" });
  const token = readFileSync(file, "utf8").trim();
  if (token.length < 16) throw new DataError("admin token is shorter than 16 characters", file);
  return token;
}

function openStore(args: Parsed, cfg: ControlPlaneConfig["spec"] | undefined, dataDir: string, log: Logger): Store {
  const type = str(args, "store") ?? cfg?.store.type ?? "embedded";
  const endpoints = strs(args, "etcd-endpoint").length ? strs(args, "etcd-endpoint") : cfg?.store.endpoints ?? [];
  if (type === "etcd") {
    if (!endpoints.length) throw new UsageError("--store etcd needs at least one --etcd-endpoint", "--store");
    return new EtcdStore({ endpoints, log });
  }
  if (type !== "embedded") throw new UsageError(`expected embedded or etcd, got "${type}"`, "--store");
  return openSqliteStore(join(dataDir, "store"), { log });
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
    { name: "cert-ttl", type: "string", value: "DURATION", description: "Lifetime of signed workload certificates (default 24h)." },
    { name: "lease-ttl", type: "string", value: "DURATION", description: "How long a registration outlives its last heartbeat (default 10s)." },
    { name: "max-endpoints-per-service", type: "string", value: "N", description: "Endpoints one service may have registered at once, its replicas; past it a registration gets 429 (default 256)." },
    { name: "admin-identity", type: "strings", value: "SPIFFE-ID", description: "An identity allowed to use the admin API over mTLS; repeatable." },
    { name: "max-connections", type: "string", value: "N", description: "Connections the mTLS API listener holds before closing new ones at accept (default: a sixth of the open-files limit)." },
    { name: "admin-token-file", type: "string", value: "FILE", description: "The admin token (default <data-dir>/admin-token, generated once)." },
  ],
  examples: ["mesh control-plane", "mesh control-plane --store etcd --etcd-endpoint http://10.0.0.1:2379 --etcd-endpoint http://10.0.0.2:2379"],
  async run(args, ctx) {
    const cfg = await loadConfig(str(args, "config"));
    const listen = (flag: string, fromFile: Listen | undefined, fallback: string, parse = parseListen) =>
      str(args, flag) ? parse(str(args, flag)!, `--${flag}`) : fromFile ?? parseListen(fallback, `--${flag}`);
    const dataDir = str(args, "data-dir") ?? cfg?.dataDir ?? "./data";
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    const caDir = str(args, "ca-dir") ?? cfg?.ca.dir ?? "certs";
    if (!existsSync(caPaths(caDir).intermediateCert)) {
      const td = str(args, "trust-domain") ?? cfg?.trustDomain ?? "mesh.local";
      await createCaFiles(caDir, td);
      ctx.log.warn({ caDir, trustDomain: td }, "no CA found; created a new one");
    }
    const ca = await loadCa(caDir);
    const policiesFlag = str(args, "policies");
    const policiesDir = policiesFlag ?? cfg?.policiesDir ?? "policies";
    if (policiesFlag && !existsSync(policiesFlag)) throw new UsageError(`no such directory "${policiesFlag}"`, "--policies");
    const store = openStore(args, cfg, dataDir, ctx.log);
    const cp = await startControlPlane({
      store,
      storeKind: store instanceof EtcdStore ? "etcd" : "embedded",
      ca,
      tokenKey: await loadOrCreateTokenKey(caDir),
      adminToken: adminToken(str(args, "admin-token-file") ?? join(dataDir, ADMIN_TOKEN_FILE)),
      adminIdentities: [...(cfg?.adminIdentities ?? []), ...strs(args, "admin-identity")],
      api: listen("api", cfg?.api, "0.0.0.0:15010"),
      admin: listen("admin", cfg?.admin, "127.0.0.1:15011", (text, flag) => loopbackListen(text, flag, CONTROL_PLANE_ADMIN_ELSEWHERE)),
      bootstrap: listen("bootstrap", cfg?.bootstrap, "0.0.0.0:15012"),
      certTtlMs: str(args, "cert-ttl") ? durationFlag(str(args, "cert-ttl")!, "--cert-ttl") : cfg?.certTtl ?? 24 * 3600_000,
      leaseTtlMs: str(args, "lease-ttl") ? timerFlag(str(args, "lease-ttl")!, "--lease-ttl") : cfg?.leaseTtl ?? 10_000,
      maxEndpointsPerService: countFlag(str(args, "max-endpoints-per-service"), "--max-endpoints-per-service", "endpoints") ?? cfg?.maxEndpointsPerService,
      policiesDir: existsSync(policiesDir) ? policiesDir : undefined,
      maxConnections: countFlag(str(args, "max-connections"), "--max-connections", "connections") ?? cfg?.maxConnections,
      log: ctx.log,
    });
    return serveUntilSignal(ctx, { trustDomain: ca.trustDomain, bundle: ca.paths.bundle, ...cp.ports }, "stopping", async () => {
      await cp.stop();
      return 0;
    });
  },
};
