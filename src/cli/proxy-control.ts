/**
 * `mesh proxy --control-plane URL`: get a certificate (the one kept from last time, or a
 * first one for a join token), then follow the control plane for endpoints, config and
 * renewals. Without a control plane reachable the proxy still starts on what it has.
 */
import { existsSync, readFileSync } from "node:fs";
import { workloadPaths } from "../ca/layout.ts";
import { DataError, UsageError } from "../core/errors.ts";
import { readTextFile } from "../core/files.ts";
import { TrustBundle } from "../pki/trust-bundle.ts";
import type { Logger } from "../core/log.ts";
import { loadWorkloadCerts, type WorkloadCerts } from "../proxy/certs.ts";
import { ControlPlaneAgent } from "../proxy/control/agent.ts";
import { bootstrap } from "../proxy/control/bootstrap.ts";
import { ControlPlaneClient } from "../proxy/control/cp-client.ts";
import type { RunningProxy } from "../proxy/proxy.ts";
import { str, strs, type FlagSpec, type Parsed } from "./args.ts";
import { Host } from "../config/common.ts";
import { CalledService, HttpsOrigin, type ControlPlaneSection } from "../config/kinds/proxy-config.ts";
import { schemaFlag } from "./flags.ts";

export const CONTROL_FLAGS: FlagSpec[] = [
  { name: "control-plane", type: "strings", value: "URL", description: "A control-plane replica's mTLS API, e.g. https://10.0.0.1:15010; repeat for each replica." },
  { name: "bootstrap-url", type: "string", value: "URL", description: "Where to trade a join token for a first certificate (default: the control plane's host, port 15012)." },
  { name: "join-token-file", type: "string", value: "FILE", description: "Join token for the first certificate (or $MESH_JOIN_TOKEN); not needed once certs-dir holds one." },
  { name: "advertise", type: "string", value: "ADDRESS", description: "Address other sidecars reach this one at (default: the inbound address, or 127.0.0.1 if it is a wildcard)." },
  { name: "calls", type: "strings", value: "SERVICE", description: "A service this one calls (name or name.namespace); repeatable. Default: every service." },
  { name: "health-path", type: "string", value: "PATH", description: "Path on --upstream checked before each heartbeat (default: judged from traffic); a failing service is not offered." },
];

const RENEW_MARGIN_MS = 60_000;

/** Where the control plane is and how to join it: the --control-plane flags, else ProxyConfig.controlPlane. */
export interface ControlPlaneSettings {
  urls: URL[];
  bootstrapUrl: string;
  joinTokenFile?: string;
  /** The trust bundle the control plane's certificate must chain to (--ca). */
  trustBundle?: string;
  advertise?: string;
  calls?: string[];
  /** How each setting was given, for errors: a flag, or the config file's field. */
  where: (flag: string, field: string) => string;
}

/**
 * The control-plane settings, flags first, then the file; undefined when neither names a control plane.
 * The flags are held to the rules of the file's fields (the file's values were checked as it loaded).
 */
export function controlPlaneSettings(args: Parsed, fromFile: ControlPlaneSection | undefined): ControlPlaneSettings | undefined {
  const flagUrls = strs(args, "control-plane").map((t) => schemaFlag(HttpsOrigin, t, "--control-plane"));
  const bootstrapFlag = str(args, "bootstrap-url");
  if (bootstrapFlag !== undefined) schemaFlag(HttpsOrigin, bootstrapFlag, "--bootstrap-url");
  const advertiseFlag = str(args, "advertise");
  if (advertiseFlag !== undefined) schemaFlag(Host, advertiseFlag, "--advertise");
  const calls = strs(args, "calls").map((t) => schemaFlag(CalledService, t, "--calls"));
  const urlTexts = flagUrls.length ? flagUrls : fromFile?.urls ?? [];
  if (!urlTexts.length) {
    // Taken and ignored, such a flag would leave a sidecar outside the mesh its operator meant it to join.
    const stray = CONTROL_FLAGS.find((f) => f.name !== "control-plane" && args.given?.has(f.name));
    if (stray) throw new UsageError("has no effect without --control-plane (or controlPlane in the --config ProxyConfig)", `--${stray.name}`);
    return undefined;
  }
  const where = (flag: string, field: string) => (args.given?.has(flag) || !fromFile ? `--${flag}` : `--config spec.controlPlane.${field}`);
  const urls = urlTexts.map((t) => new URL(t));
  const bootstrapText = bootstrapFlag ?? fromFile?.bootstrapUrl;
  let bootstrapUrl: string;
  if (bootstrapText) bootstrapUrl = bootstrapText;
  else {
    const first = new URL(urls[0]!.origin);
    first.port = "15012";
    bootstrapUrl = first.origin;
  }
  return {
    urls,
    bootstrapUrl,
    joinTokenFile: str(args, "join-token-file") ?? fromFile?.joinTokenFile,
    trustBundle: str(args, "ca") ?? fromFile?.trustBundle,
    advertise: advertiseFlag ?? fromFile?.advertise,
    calls: calls.length ? calls : fromFile?.calls,
    where,
  };
}

function tokenFrom(cp: ControlPlaneSettings): string | undefined {
  if (cp.joinTokenFile) return readTextFile(cp.joinTokenFile, "join token").trim();
  return process.env.MESH_JOIN_TOKEN?.trim() || undefined;
}

/** The certificate kept in certsDir if it is still good; otherwise a new one for the join token. */
export async function controlPlaneCerts(cp: ControlPlaneSettings, certsDir: string, namespace: string, service: string, log: Logger): Promise<WorkloadCerts> {
  const paths = workloadPaths(certsDir);
  if (existsSync(paths.chain) && existsSync(paths.key)) {
    const kept = await keptCerts(cp, certsDir).catch((err: Error) => {
      log.warn({ err: err.message }, "kept certificate unusable; bootstrapping a new one");
      return undefined;
    });
    if (kept && kept.notAfter.getTime() - Date.now() > RENEW_MARGIN_MS) return kept;
  }
  const token = tokenFrom(cp);
  const tokenWhere = cp.where("join-token-file", "joinTokenFile");
  if (!token) throw new UsageError(`no usable certificate in ${certsDir}: give --join-token-file, controlPlane.joinTokenFile or $MESH_JOIN_TOKEN to get one`, tokenWhere);
  const bundleFile = cp.trustBundle ?? (existsSync(paths.bundle) ? paths.bundle : undefined);
  if (!bundleFile) throw new UsageError("give --ca (or controlPlane.trustBundle): the trust bundle the control plane's certificate must chain to", cp.where("ca", "trustBundle"));
  const bundlePem = readFileSync(bundleFile, "utf8");
  const trustDomain = controlPlaneDomain(bundlePem, bundleFile);
  log.info({ url: cp.bootstrapUrl, service, namespace }, "bootstrapping the first certificate");
  return bootstrap({ url: cp.bootstrapUrl, token, bundlePem, trustDomain, namespace, service, certsDir, log });
}

/**
 * The certificate kept in certsDir, with the bundle the agent saved beside it: the control
 * plane's latest, a root rotation's new root included, where --ca is the one the sidecar
 * was first given. --ca serves when that bundle is missing or does not verify the chain.
 */
async function keptCerts(cp: ControlPlaneSettings, certsDir: string): Promise<WorkloadCerts> {
  const saved = existsSync(workloadPaths(certsDir).bundle) ? await loadWorkloadCerts({ certsDir }).catch((err: Error) => err) : undefined;
  if (saved !== undefined && !(saved instanceof Error)) return saved;
  if (cp.trustBundle === undefined && saved instanceof Error) throw saved;
  return loadWorkloadCerts({ certsDir, ca: cp.trustBundle });
}

export function startAgent(cp: ControlPlaneSettings, proxy: RunningProxy, ctx: { namespace: string; service: string; zone: string | undefined; inboundAddress: string; certs: WorkloadCerts; certsDir: string; log: Logger }): ControlPlaneAgent {
  const bases = cp.urls.map((u) => u.origin);
  const wildcard = ctx.inboundAddress === "0.0.0.0" || ctx.inboundAddress === "::";
  const address = cp.advertise ?? (wildcard ? "127.0.0.1" : ctx.inboundAddress);
  if (wildcard && !cp.advertise)
    ctx.log.warn({ advertise: address }, "inbound listens on every address but registers 127.0.0.1: only sidecars on this host can reach it; give --advertise");
  const agent = new ControlPlaneAgent({
    client: new ControlPlaneClient(bases, ctx.certs),
    registration: { namespace: ctx.namespace, service: ctx.service, address, port: proxy.ports.inbound, weight: 1, ...(ctx.zone !== undefined && { zone: ctx.zone }) },
    calls: cp.calls,
    certs: ctx.certs,
    certsDir: ctx.certsDir,
    log: ctx.log,
    target: {
      applyConfig: (docs, version) => proxy.applyConfig(docs, version),
      useCerts: (certs) => proxy.useCerts(certs),
      healthy: () => proxy.healthy(),
    },
  });
  agent.start();
  return agent;
}

/**
 * The trust domain of the control plane that signs a first certificate: its bundle's only
 * one. With roots of several, any of them could vouch for a "control plane" in its own
 * domain, and which one is ours is not for the file's order to say.
 */
function controlPlaneDomain(bundlePem: string, bundleFile: string): string {
  const domains = TrustBundle.fromPem(bundlePem, undefined, bundleFile).trustDomains();
  if (domains.length !== 1) throw new DataError(`holds roots of ${domains.length} trust domains (${domains.join(", ")}); a first certificate needs the control plane's own bundle, one trust domain's roots`, bundleFile);
  return domains[0]!;
}
