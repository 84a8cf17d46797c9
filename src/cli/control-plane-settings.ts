/**
 * `mesh control-plane`'s settings: every flag and config-file field, checked and read
 * before anything is written or started, so a bad one leaves nothing behind.
 */
import { existsSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { certTtlProblem, DEFAULT_LEAF_TTL_MS, leaseTtlProblem } from "../ca/lifetimes.ts";
import { CONTROL_PLANE_ADMIN_ELSEWHERE, type ControlPlaneConfig } from "../config/kinds/control-plane-config.ts";
import { DataError, UsageError } from "../core/errors.ts";
import { readTextFile } from "../core/files.ts";
import { isLoopback } from "../core/ip-address.ts";
import type { ControlPlaneOptions } from "../control-plane/server.ts";
import { parseSpiffeId, trustDomainProblem } from "../pki/spiffe.ts";
import type { EtcdTls } from "../store/etcd-client.ts";
import { etcdClientKeyMatches, etcdTlsFileProblem } from "../store/etcd-tls.ts";
import { str, strs, type Parsed } from "./args.ts";
import { countFlag, durationFlag, loopbackListen, parseListen, timerFlag, type Listen } from "./flags.ts";

/** The admin token's file in the data directory, when --admin-token-file names none. */
export const ADMIN_TOKEN_FILE = "admin-token";

export type StoreSettings = { type: "embedded" } | { type: "etcd"; endpoints: string[]; where: string; tls: EtcdTls | undefined };

/** Everything the flags and the config file ask for, checked before anything is written or started. */
export interface Settings {
  dataDir: string;
  caDir: string;
  /** Of a CA created here; an existing CA keeps its own. */
  trustDomain: string;
  /** --trust-domain, when given: an existing CA of another domain is then refused, not silently kept. */
  trustDomainFlag: string | undefined;
  store: StoreSettings;
  policiesDir: string | undefined;
  adminTokenFile: { path: string; where: string };
  options: Omit<ControlPlaneOptions, "store" | "storeKind" | "ca" | "tokenKey" | "adminToken" | "policiesDir" | "log">;
}

/** A lifetime from its flag, held to its bounds; else the config file's (its schema holds it to them), else the default. */
function lifetimeMs(flagText: string | undefined, flag: string, parse: (text: string, flag: string) => number, fileMs: number | undefined, fallbackMs: number, problem: (ms: number) => string | undefined): number {
  if (flagText === undefined) return fileMs ?? fallbackMs;
  const ms = parse(flagText, flag);
  const bad = problem(ms);
  if (bad !== undefined) throw new UsageError(bad, flag);
  return ms;
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

/** The etcd TLS flags and the config file's store.tls fields they override. */
const TLS_FLAGS = [["etcd-ca", "ca"], ["etcd-cert", "cert"], ["etcd-key", "key"]] as const;

function storeSettings(args: Parsed, cfg: ControlPlaneConfig["spec"] | undefined): StoreSettings {
  const type = str(args, "store") ?? cfg?.store.type ?? "embedded";
  if (type !== "embedded" && type !== "etcd") throw new UsageError(`expected embedded or etcd, got "${type}"`, "--store");
  const flagEndpoints = strs(args, "etcd-endpoint");
  for (const e of flagEndpoints) {
    const problem = etcdEndpointProblem(e);
    if (problem) throw new UsageError(problem, "--etcd-endpoint");
  }
  if (type === "embedded") {
    // Any etcd flag on the embedded store would be silently unused: the operator meant etcd, or gave the wrong flags.
    const stray = flagEndpoints.length ? "etcd-endpoint" : TLS_FLAGS.map(([flag]) => flag).find((flag) => str(args, flag) !== undefined);
    if (stray) throw new UsageError("only used with --store etcd (or store.type etcd in --config)", `--${stray}`);
    return { type };
  }
  const tls = etcdTls(args, cfg);
  if (flagEndpoints.length) return { type, endpoints: withTls(flagEndpoints, tls, "--etcd-endpoint"), where: "--etcd-endpoint", tls };
  const endpoints = cfg?.store.endpoints ?? [];
  if (!endpoints.length) throw new UsageError("--store etcd needs at least one --etcd-endpoint", "--store");
  for (const [i, e] of endpoints.entries()) {
    const problem = etcdEndpointProblem(e);
    if (problem) throw new DataError(problem, `--config spec.store.endpoints[${i}]`);
  }
  return { type, endpoints: withTls(endpoints, tls, "--config spec.store.endpoints"), where: "--config spec.store.endpoints", tls };
}

/**
 * The TLS material for etcd, read and checked now so a missing file, or one that holds the
 * wrong thing, stops the start with the flag and file named, before anything is written
 * (else the handshake fails later, and reads as etcd not answering): --etcd-ca, and
 * --etcd-cert with --etcd-key (a member started with --client-cert-auth asks for them),
 * each overriding the file's store.tls.
 */
function etcdTls(args: Parsed, cfg: ControlPlaneConfig["spec"] | undefined): EtcdTls | undefined {
  const files = TLS_FLAGS.map(([flag, field]) => {
    const path = str(args, flag);
    if (path !== undefined) return { field, path, what: `--${flag} file` };
    const fromConfig = cfg?.store.tls?.[field];
    return fromConfig === undefined ? undefined : { field, path: fromConfig, what: `--config spec.store.tls.${field} file` };
  });
  const [ca, cert, key] = files;
  if ((cert === undefined) !== (key === undefined)) throw new UsageError("--etcd-cert and --etcd-key go together: a client certificate and its key", cert === undefined ? "--etcd-cert" : "--etcd-key");
  const read = (f: (typeof files)[number]) => {
    if (f === undefined) return undefined;
    const text = readTextFile(f.path, f.what);
    const problem = etcdTlsFileProblem(f.field, text);
    if (problem !== undefined) throw new DataError(`${f.what} ${problem}`, f.path);
    return text;
  };
  const tls = { ca: read(ca), cert: read(cert), key: read(key) };
  if (tls.cert !== undefined && tls.key !== undefined && !etcdClientKeyMatches(tls.cert, tls.key)) throw new DataError(`${key!.what} does not match the client certificate ${cert!.path}`, key!.path);
  return tls.ca === undefined && tls.cert === undefined ? undefined : tls;
}

/** TLS material is for https:// members; given with an http:// one, it would silently not be used. */
function withTls(endpoints: string[], tls: EtcdTls | undefined, where: string): string[] {
  const plain = endpoints.find((e) => e.startsWith("http:"));
  if (tls !== undefined && plain !== undefined) throw new UsageError(`${plain} is plain HTTP, but TLS to etcd was asked for (--etcd-ca, --etcd-cert): give its https:// URL`, where);
  return endpoints;
}

/** The etcd members reached without TLS on an address off this host: anyone who can reach them can change the mesh. */
export function plaintextRemoteEtcd(store: StoreSettings): string[] {
  if (store.type !== "etcd") return [];
  return store.endpoints.filter((e) => e.startsWith("http:") && !isLoopback(new URL(e).hostname.replace(/^\[|\]$/g, "")));
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

export function settingsFrom(args: Parsed, cfg: ControlPlaneConfig["spec"] | undefined): Settings {
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
    trustDomainFlag,
    store: storeSettings(args, cfg),
    policiesDir: existsSync(policiesDir) ? policiesDir : undefined,
    adminTokenFile: adminTokenFile(args, dataDir),
    options: {
      adminIdentities: adminIdentities(args, cfg),
      api: listen("api", cfg?.api, "0.0.0.0:15010"),
      admin: listen("admin", cfg?.admin, "127.0.0.1:15011", (text, flag) => loopbackListen(text, flag, CONTROL_PLANE_ADMIN_ELSEWHERE)),
      bootstrap: listen("bootstrap", cfg?.bootstrap, "0.0.0.0:15012"),
      certTtlMs: lifetimeMs(str(args, "cert-ttl"), "--cert-ttl", durationFlag, cfg?.certTtl, DEFAULT_LEAF_TTL_MS, certTtlProblem),
      leaseTtlMs: lifetimeMs(str(args, "lease-ttl"), "--lease-ttl", timerFlag, cfg?.leaseTtl, 10_000, leaseTtlProblem),
      maxEndpointsPerService: countFlag(str(args, "max-endpoints-per-service"), "--max-endpoints-per-service", "endpoints") ?? cfg?.maxEndpointsPerService,
      maxConnections: countFlag(str(args, "max-connections"), "--max-connections", "connections") ?? cfg?.maxConnections,
    },
  };
}
