/**
 * `mesh proxy --control-plane URL`: get a certificate (the one kept from last time, or a
 * first one for a join token), then follow the control plane for endpoints, config and
 * renewals. Without a control plane reachable the proxy still starts on what it has.
 */
import { existsSync, readFileSync } from "node:fs";
import { workloadPaths } from "../ca/layout.ts";
import { UsageError } from "../core/errors.ts";
import { readTextFile } from "../core/files.ts";
import { readCertificates, trustDomainOfCa } from "../pki/load.ts";
import type { Logger } from "../core/log.ts";
import { loadWorkloadCerts, type WorkloadCerts } from "../proxy/certs.ts";
import { ControlPlaneAgent } from "../proxy/control/agent.ts";
import { bootstrap } from "../proxy/control/bootstrap.ts";
import { ControlPlaneClient } from "../proxy/control/cp-client.ts";
import type { RunningProxy } from "../proxy/proxy.ts";
import { str, strs, type FlagSpec, type Parsed } from "./args.ts";

export const CONTROL_FLAGS: FlagSpec[] = [
  { name: "control-plane", type: "strings", value: "URL", description: "A control-plane replica's mTLS API, e.g. https://10.0.0.1:15010; repeat for each replica." },
  { name: "bootstrap-url", type: "string", value: "URL", description: "Where to trade a join token for a first certificate (default: the control plane's host, port 15012)." },
  { name: "join-token-file", type: "string", value: "FILE", description: "Join token for the first certificate (or $MESH_JOIN_TOKEN); not needed once certs-dir holds one." },
  { name: "advertise", type: "string", value: "ADDRESS", description: "Address other sidecars reach this one at (default: the inbound address, or 127.0.0.1 if it is a wildcard)." },
  { name: "calls", type: "strings", value: "SERVICE", description: "A service this one calls (name or name.namespace); repeatable. Default: every service." },
  { name: "health-path", type: "string", value: "PATH", description: "Path on --upstream checked before each heartbeat (default: judged from traffic); a failing service is not offered." },
];

const RENEW_MARGIN_MS = 60_000;

export function usesControlPlane(args: Parsed): boolean {
  return strs(args, "control-plane").length > 0;
}

function controlPlaneUrls(args: Parsed): URL[] {
  return strs(args, "control-plane").map((text) => {
    try {
      return new URL(text);
    } catch {
      throw new UsageError(`expected a URL like https://10.0.0.1:15010, got "${text}"`, "--control-plane");
    }
  });
}

function tokenFrom(args: Parsed): string | undefined {
  const file = str(args, "join-token-file");
  if (file) return readTextFile(file, "join token").trim();
  return process.env.MESH_JOIN_TOKEN?.trim() || undefined;
}

/** The certificate kept in certsDir if it is still good; otherwise a new one for the join token. */
export async function controlPlaneCerts(args: Parsed, certsDir: string, namespace: string, service: string, log: Logger): Promise<WorkloadCerts> {
  const paths = workloadPaths(certsDir);
  if (existsSync(paths.chain) && existsSync(paths.key)) {
    const kept = await loadWorkloadCerts({ certsDir, ca: str(args, "ca") }).catch((err: Error) => {
      log.warn({ err: err.message }, "kept certificate unusable; bootstrapping a new one");
      return undefined;
    });
    if (kept && kept.notAfter.getTime() - Date.now() > RENEW_MARGIN_MS) return kept;
  }
  const token = tokenFrom(args);
  if (!token) throw new UsageError(`no usable certificate in ${certsDir}: give --join-token-file (or $MESH_JOIN_TOKEN) to get one`, "--join-token-file");
  const bundleFile = str(args, "ca") ?? (existsSync(paths.bundle) ? paths.bundle : undefined);
  if (!bundleFile) throw new UsageError("give --ca: the trust bundle the control plane's certificate must chain to", "--ca");
  const bundlePem = readFileSync(bundleFile, "utf8");
  const trustDomain = trustDomainOfCa(readCertificates(bundlePem, bundleFile, "trust bundle")[0]!, bundleFile);
  const url = bootstrapUrl(args);
  log.info({ url, service, namespace }, "bootstrapping the first certificate");
  return bootstrap({ url, token, bundlePem, trustDomain, namespace, service, certsDir });
}

function bootstrapUrl(args: Parsed): string {
  const given = str(args, "bootstrap-url");
  if (given) return given;
  const cp = controlPlaneUrls(args)[0]!;
  cp.port = "15012";
  return cp.origin;
}

export function startAgent(args: Parsed, proxy: RunningProxy, ctx: { namespace: string; service: string; inboundAddress: string; certs: WorkloadCerts; certsDir: string; log: Logger }): ControlPlaneAgent {
  const bases = controlPlaneUrls(args).map((u) => u.origin);
  const wildcard = ctx.inboundAddress === "0.0.0.0" || ctx.inboundAddress === "::";
  const address = str(args, "advertise") ?? (wildcard ? "127.0.0.1" : ctx.inboundAddress);
  if (wildcard && !str(args, "advertise"))
    ctx.log.warn({ advertise: address }, "inbound listens on every address but registers 127.0.0.1: only sidecars on this host can reach it; give --advertise");
  const calls = strs(args, "calls");
  const agent = new ControlPlaneAgent({
    client: new ControlPlaneClient(bases, ctx.certs),
    registration: { namespace: ctx.namespace, service: ctx.service, address, port: proxy.ports.inbound, weight: 1 },
    calls: calls.length ? calls : undefined,
    certs: ctx.certs,
    certsDir: ctx.certsDir,
    log: ctx.log,
    target: {
      applyConfig: (docs, version) => proxy.applyConfig(docs, version),
      markConfigured: () => proxy.markConfigured(),
      useCerts: (certs) => proxy.useCerts(certs),
      healthy: () => proxy.healthy(),
    },
  });
  agent.start();
  return agent;
}
