/** `mesh proxy`: run a sidecar from flags and/or a static config file. */
import { CollectorUrl, ESCAPED_SLASHES, PROXY_ADMIN_ELSEWHERE, SamplingPercent, UNKNOWN_DESTINATIONS, Upstream, type ProxyConfig } from "../config/kinds/proxy-config.ts";
import { listenerClash, Zone } from "../config/common.ts";
import { DataError, UsageError } from "../core/errors.ts";
import { nameProblem } from "../pki/spiffe.ts";
import { defaultCertsDir, loadWorkloadCerts } from "../proxy/certs.ts";
import { watchCertFiles } from "../proxy/cert-files-watch.ts";
import { startProxy, type RunningProxy } from "../proxy/proxy.ts";
import type { Listen } from "../proxy/proxy-options.ts";
import { openAccessLog } from "../proxy/access-log.ts";
import { loadSavedConfig } from "../proxy/control/saved-config.ts";
import { bool, str, type CommandContext, type CommandSpec, type Parsed } from "./args.ts";
import { CONTROL_FLAGS, controlPlaneCerts, controlPlaneSettings, startAgent } from "./proxy-control.ts";
import type { TcpUpstream } from "../proxy/tcp/outbound-tcp.ts";
import { choiceFlag, countFlag, loopbackListen, parseListen, parseTcpUpstream, schemaFlag, timerFlag } from "./flags.ts";
import { serveUntilSignal } from "./serve-until-signal.ts";
import { loadConfig, watchConfigFile } from "./proxy-config-file.ts";
import { settlesWithin } from "../core/settles-within.ts";

const DEFAULT_MAX_BODY = 1 << 30; // 1 GiB: bodies stream, so this bounds abuse, not memory


function parseUpstream(text: string, where: string): URL {
  return new URL(schemaFlag(Upstream, text, where));
}

export const proxyCommand: CommandSpec = {
  name: "proxy",
  summary: "Run the sidecar: mTLS with SPIFFE identities between services, load balancing, metrics.",
  description:
    "Inbound (default 0.0.0.0:15006) accepts only mutual TLS from the trust domain and hands requests\n" +
    "to --upstream with the caller's SPIFFE ID in x-mesh-client-id. Outbound (default 127.0.0.1:15001)\n" +
    "takes the service's calls, as HTTP_PROXY (CONNECT too) or by Host header, HTTP/1.1 or HTTP/2 (gRPC,\n" +
    "h2c with prior knowledge), and sends them over mTLS to a peer whose SPIFFE ID must be the\n" +
    "destination's; an HTTP/2 call reaches the service as HTTP/2 (h2c on --upstream), or as HTTP/1.1\n" +
    "when its Service declares the port protocol: http. Flags override the config file. At start the\n" +
    "sidecar restarts itself once, same pid, with its engine settings (a heap sized for a sidecar, one\n" +
    "GC marker); MESH_RUNTIME_TUNING=off runs it with the runtime's defaults.",
  flags: [
    { name: "service", type: "string", value: "NAME", description: "Service this sidecar fronts (or ProxyConfig.service)." },
    { name: "namespace", type: "string", value: "NS", description: "Namespace of the service (default: default)." },
    { name: "zone", type: "string", value: "ZONE", description: "Locality of this instance, e.g. eu-west-1a: registered with its endpoint, and its calls prefer endpoints of the same zone (default: none)." },
    { name: "upstream", type: "string", value: "URL", description: "The local service, e.g. http://127.0.0.1:8080." },
    { name: "config", type: "string", value: "FILE", description: "Manifests: an optional ProxyConfig and the Services this proxy may call, with endpoints; edits are taken as the file changes (the ProxyConfig's at the next start)." },
    { name: "certs-dir", type: "string", value: "DIR", description: "Directory from 'mesh ca issue' (default: certs/<namespace>/<service>)." },
    { name: "cert", type: "string", value: "FILE", description: "Certificate chain (PEM), instead of --certs-dir." },
    { name: "key", type: "string", value: "FILE", description: "Private key (PEM), instead of --certs-dir." },
    { name: "ca", type: "string", value: "FILE", description: "Trust bundle (PEM), instead of --certs-dir." },
    { name: "inbound", type: "string", value: "ADDR:PORT", description: "mTLS listener (default 0.0.0.0:15006)." },
    { name: "outbound", type: "string", value: "ADDR:PORT", description: "Listener for the service's calls (default 127.0.0.1:15001)." },
    { name: "admin", type: "string", value: "ADDR:PORT", description: "Admin listener, loopback only: /live /ready /metrics /config_dump (default 127.0.0.1:15000)." },
    { name: "status", type: "string", value: "ADDR:PORT", description: "Status listener for probes and scrapers: /live /ready /metrics only (default: none; Kubernetes: 0.0.0.0:15021)." },
    { name: "drain-timeout", type: "string", value: "DURATION", description: "How long SIGTERM waits for in-flight requests (default 30s)." },
    { name: "stream-idle-timeout", type: "string", value: "DURATION", description: "Reset an HTTP/2 stream (a gRPC call) that carries nothing either way this long, and cut an HTTP/1.1 response body that carries nothing this long; 0s never (default 5m)." },
    { name: "outbound-drain-delay", type: "string", value: "DURATION", description: "After SIGTERM, keep taking the service's outbound calls at least this long, within the drain timeout (default 0s: until the inbound requests are done)." },
    { name: "access-log", type: "string", value: "PATH", description: "Write one JSON line per request, inbound and outbound, to PATH (appended; opened again on SIGHUP, after log rotation), or - for stdout (default: none)." },
    { name: "trace-collector", type: "string", value: "URL", description: "Send a span per request, inbound and outbound, to this OTLP/HTTP endpoint, e.g. http://127.0.0.1:4318/v1/traces (default: none)." },
    { name: "trace-sampling", type: "string", value: "PERCENT", description: "Percent of new traces sampled; a request's own traceparent decides for its trace (default 1)." },
    { name: "max-body-size", type: "string", value: "BYTES", description: `Largest request body accepted (default ${DEFAULT_MAX_BODY}).` },
    { name: "max-connections", type: "string", value: "N", description: "Connections the inbound and outbound listeners hold together before closing new ones at accept (default: half the open-files limit)." },
    { name: "tcp-upstream", type: "strings", value: "SVC:PORT=[ADDR:]PORT", description: "Carry opaque TCP to a Service's tcp port from a local listener, e.g. postgres:5432=15432 (the app connects to 127.0.0.1:15432); repeatable; replaces ProxyConfig.tcpUpstreams." },
    { name: "transparent", type: "boolean", description: "Take the connections mesh redirect sends the outbound listener: one to a Service's address at a tcp port is carried as opaque TCP, the rest read as HTTP (Linux; or ProxyConfig.transparent)." },
    { name: "unknown-destinations", type: "string", value: "refuse|passthrough", description: "With --transparent, a redirected connection bound for an address no Service has: read as a call (refuse: 404 for an unknown Host; the default), or sent where it was going as plain TCP unless its first request names a mesh Service (passthrough, Istio's ALLOW_ANY)." },
    { name: "escaped-slashes", type: "string", value: "refuse|keep", description: "%2F and %5C in an inbound path: refuse them (default), or keep them as data for a service that never reads them as separators; rules then match them as data." },
    ...CONTROL_FLAGS,
  ],
  examples: [
    "mesh proxy --service orders --upstream http://127.0.0.1:8080 --config proxy.yaml",
    "curl -x http://127.0.0.1:15001 http://payments/charge",
  ],
  async run(args, ctx) {
    const sidecar = await startProxyFromArgs(args, ctx);
    return serveUntilSignal(ctx, { identity: sidecar.identity, ...sidecar.proxy.ports }, "draining", async () => exitOnceStopped(sidecar, (await sidecar.stop()) ? 0 : 1));
  },
};

/** A started sidecar: `mesh proxy` runs it until a signal, `mesh run` around a service. */
export interface Sidecar {
  service: string;
  identity: string;
  proxy: RunningProxy;
  /** Listen addresses as configured; the bound ports are in proxy.ports. */
  addresses: { inbound: string; outbound: string; admin: string };
  /** The TCP upstreams, in the order of proxy.ports.tcp. */
  tcpUpstreams: TcpUpstream[];
  drainTimeoutMs: number;
  /** Settles once the control plane's first config has been handled (at once without a control plane). */
  configured: Promise<void>;
  /** Stops taking inbound connections at once and leaves discovery (in the background; stop() waits for it, within the drain timeout); the outbound listener serves on. */
  leave(): void;
  /**
   * Stops taking inbound connections (not ready), drains, and leaves discovery meanwhile, all within the drain timeout;
   * true when every in-flight request finished. `serviceExited`: see RunningProxy.drain.
   */
  stop(serviceExited?: boolean): Promise<boolean>;
  /** Set by stop() when the control plane left the deregistration unanswered at the drain deadline: its call, still in flight, holds the process open (up to the client's call timeout). */
  deregistrationLeftInFlight: boolean;
}

/** `code`, the stopped sidecar's command's exit code; the process exits with it at once if a call left in flight would hold it open past the drain timeout. */
export function exitOnceStopped(sidecar: Sidecar, code: number): number {
  if (sidecar.deregistrationLeftInFlight) process.exit(code);
  return code;
}

/** Flags and config file to a running sidecar: all `mesh proxy` does before its ready line. */
export async function startProxyFromArgs(args: Parsed, ctx: CommandContext): Promise<Sidecar> {
  const file = await loadConfig(str(args, "config"));
  // Said once at start: a file shared with the control plane is fine, but a user who put settings there for the sidecar learns they are not read.
  if (file.skipped.length > 0) ctx.log.info({ documents: file.skipped }, "--config documents that mesh proxy does not read were skipped (mesh control-plane reads them)");
  const pc = file.proxy?.spec;
  // The flag wins; otherwise the config file's level applies from here on.
  if (pc && !args.given?.has("log-level")) ctx.log.level = pc.logLevel;
  const service = str(args, "service") ?? pc?.service;
  if (!service) throw new UsageError("--service is required (or a ProxyConfig in --config)", ctx.path);
  const bad = nameProblem("service", service);
  if (bad) throw new UsageError(bad, "--service");
  const namespaceFlag = str(args, "namespace");
  const badNamespace = namespaceFlag === undefined ? undefined : nameProblem("namespace", namespaceFlag);
  if (badNamespace) throw new UsageError(badNamespace, "--namespace");
  const namespace = namespaceFlag ?? pc?.namespace ?? "default";
  const zone = zoneFlag(str(args, "zone")) ?? pc?.zone;
  for (const p of [...file.authorization, ...file.rateLimits, ...file.authentication])
    if (p.metadata.namespace !== namespace)
      ctx.log.warn({ policy: `${p.kind}/${p.metadata.namespace}/${p.metadata.name}`, namespace }, "a policy in --config is for another namespace; this sidecar does not enforce it");
  const upstreamText = str(args, "upstream") ?? pc?.upstream;
  if (!upstreamText) throw new UsageError("--upstream is required (or ProxyConfig.upstream in --config)", ctx.path);
  const listen = (flag: string, fromFile: Listen | undefined, fallback: string, parse = parseListen) =>
    str(args, flag) !== undefined ? parse(str(args, flag)!, `--${flag}`) : fromFile ?? parseListen(fallback, `--${flag}`);
  const tracing = tracingSettings(args, pc?.tracing);
  const escapedSlashes = choiceFlag(str(args, "escaped-slashes"), ESCAPED_SLASHES, "--escaped-slashes") ?? pc?.escapedSlashes;
  const transparent = bool(args, "transparent") || pc?.transparent === true;
  const unknownDestinations = choiceFlag(str(args, "unknown-destinations"), UNKNOWN_DESTINATIONS, "--unknown-destinations") ?? pc?.unknownDestinations ?? "refuse";
  if (unknownDestinations === "passthrough" && !transparent)
    throw new UsageError("passthrough needs --transparent (or ProxyConfig transparent: true): only redirected connections have a destination to pass through to", str(args, "unknown-destinations") ? "--unknown-destinations" : "--config");
  // Every flag is checked before certificates are read or asked for: a bootstrap spends its single-use join token.
  const drainText = str(args, "drain-timeout");
  const drainTimeoutMs = drainText !== undefined ? timerFlag(drainText, "--drain-timeout") : pc?.drainTimeout ?? 30_000;
  const delayText = str(args, "outbound-drain-delay");
  const outboundDrainDelayMs = delayText !== undefined ? timerFlag(delayText, "--outbound-drain-delay") : pc?.outboundDrainDelay ?? 0;
  if (outboundDrainDelayMs > drainTimeoutMs)
    throw new UsageError(`${outboundDrainDelayMs} ms is longer than the drain timeout (${drainTimeoutMs} ms), which ends every drain`, "--outbound-drain-delay");
  const idleText = str(args, "stream-idle-timeout");
  const streamIdleTimeoutMs = idleText !== undefined ? timerFlag(idleText, "--stream-idle-timeout") : pc?.streamIdleTimeout;
  const healthPath = str(args, "health-path") ?? pc?.healthPath;
  if (healthPath !== undefined && !healthPath.startsWith("/")) throw new UsageError(`expected a path like /healthz, got "${healthPath}"`, "--health-path");
  const upstream = parseUpstream(upstreamText, "--upstream");
  const inbound = listen("inbound", pc?.inbound, "0.0.0.0:15006");
  const outbound = listen("outbound", pc?.outbound, "127.0.0.1:15001");
  const admin = listen("admin", pc?.admin, "127.0.0.1:15000", (text, flag) => loopbackListen(text, flag, PROXY_ADMIN_ELSEWHERE));
  const statusText = str(args, "status");
  const status = statusText !== undefined ? parseListen(statusText, "--status") : pc?.status;
  const tcpFlags = args.flags["tcp-upstream"] as string[] | undefined;
  const tcpUpstreams = tcpFlags?.length
    ? tcpFlags.map((text) => parseTcpUpstream(text, "--tcp-upstream"))
    : (pc?.tcpUpstreams ?? []).map((u) => ({ service: u.service, port: u.port, bind: { address: u.bindAddress, port: u.bindPort } }));
  const listeners: Record<string, Listen | undefined> = { inbound, outbound, admin, status };
  tcpUpstreams.forEach((u, i) => (listeners[`tcp-upstream ${i + 1} (${u.service}:${u.port})`] = u.bind));
  const clash = listenerClash(listeners, Object.keys(listeners));
  if (clash) {
    const flag = (name: string) => (name.startsWith("tcp-upstream") ? "tcp-upstream" : name);
    throw new UsageError(`the ${clash[1]} and ${clash[0]} listeners would share port ${listeners[clash[1]]!.port}`, `--${flag(clash[1])}`);
  }
  const maxBodyBytes = countFlag(str(args, "max-body-size"), "--max-body-size", "bytes") ?? DEFAULT_MAX_BODY;
  const maxConnections = countFlag(str(args, "max-connections"), "--max-connections", "connections") ?? pc?.maxConnections;
  const cp = controlPlaneSettings(args, pc?.controlPlane);
  const sources = certSources(args, pc?.certs, service, namespace, cp !== undefined);
  const certsDir = sources.certsDir ?? defaultCertsDir(service, namespace);
  const certs = cp ? await controlPlaneCerts(cp, certsDir, namespace, service, ctx.log) : await loadWorkloadCerts(sources);
  if (pc && pc.trustDomain !== certs.trustDomain)
    throw new DataError(`trustDomain ${pc.trustDomain} differs from the certificate's ${certs.trustDomain}`, "--config");
  const accessLogTarget = str(args, "access-log") ?? pc?.accessLog;
  const accessLog = accessLogTarget ? openAccessLog(accessLogTarget, str(args, "access-log") ? "--access-log" : "--config spec.accessLog") : undefined;
  const proxy = await startProxy({
    service,
    namespace,
    zone,
    upstream,
    inbound,
    outbound,
    admin,
    status,
    certs,
    services: file.services,
    policies: file.policies,
    authorization: file.authorization,
    rateLimits: file.rateLimits,
    authentication: file.authentication,
    routes: file.routes,
    healthPath,
    drainTimeoutMs,
    outboundDrainDelayMs,
    maxBodyBytes,
    streamIdleTimeoutMs,
    maxConnections,
    escapedSlashes,
    tcpUpstreams,
    transparent,
    passthrough: unknownDestinations === "passthrough",
    awaitsConfig: cp !== undefined,
    savedConfig: cp ? loadSavedConfig(certsDir, ctx.log) : undefined,
    tracing,
    accessLog,
    log: ctx.log,
  });
  const agent = cp
    ? startAgent(cp, proxy, { namespace, service, zone, inboundAddress: inbound.address, certs, certsDir, log: ctx.log })
    : undefined;
  // Files something else changes, taken as they change, or on SIGHUP: without a control plane the
  // certificate files are renewed by something else; the config file is the operator's to edit.
  const configPath = str(args, "config");
  const watches = [
    ...(cp ? [] : [watchCertFiles(certs, (next) => proxy.useCerts(next), ctx.log)]),
    ...(configPath ? [watchConfigFile(configPath, file, (documents) => proxy.useStatic(documents), ctx.log)] : []),
  ];
  let watching = true;
  // Installed for the process's life: without a handler, a SIGHUP during the drain would end it mid-drain.
  process.on("SIGHUP", () => {
    if (!watching) return ctx.log.info("SIGHUP after the sidecar began to stop: nothing is read again");
    if (watches.length === 0 && !accessLog) ctx.log.info("SIGHUP: no certificate, config or access log file to read again");
    for (const w of watches) void w.check();
    void accessLog?.reopen().then((err) => (err ? ctx.log.warn({ reason: err.message }, "access log not reopened; lines go on to the file it had") : undefined));
  });
  const stopWatching = () => {
    watching = false;
    for (const w of watches) w.stop();
  };
  const sidecar: Sidecar = {
    service,
    identity: certs.spiffeId,
    proxy,
    addresses: { inbound: inbound.address, outbound: outbound.address, admin: admin.address },
    tcpUpstreams,
    drainTimeoutMs,
    configured: agent?.firstConfig ?? Promise.resolve(),
    leave() {
      stopWatching();
      proxy.stopInbound();
      void agent?.stop();
    },
    async stop(serviceExited = false) {
      const deadline = Date.now() + drainTimeoutMs;
      stopWatching();
      // Callers are turned away (they go elsewhere) and probes hear "not ready" at once; leaving discovery meanwhile, in the
      // background: a control plane that does not answer (the client's 5 s call timeout) must not hold the drain up.
      proxy.stopInbound();
      const left = agent?.stop();
      const { clean } = await proxy.drain(serviceExited);
      // What is left of the drain timeout goes to the deregistration; past it, the lease lapses instead.
      if (left && !(await settlesWithin(left, deadline - Date.now()))) {
        ctx.log.warn("the control plane did not answer the deregistration within the drain timeout; the lease will lapse");
        sidecar.deregistrationLeftInFlight = true;
      }
      return clean;
    },
    deregistrationLeftInFlight: false,
  };
  return sidecar;
}

function zoneFlag(text: string | undefined): string | undefined {
  if (text === undefined) return undefined;
  const parsed = Zone.safeParse(text);
  if (!parsed.success) throw new UsageError(`"${text}": ${parsed.error.issues[0]!.message}`, "--zone");
  return text;
}

/** --trace-collector and --trace-sampling, each winning over the file's tracing section. */
function tracingSettings(args: Parsed, fromFile: ProxyConfig["spec"]["tracing"]): { collector: URL; sampling: number } | undefined {
  const collectorText = str(args, "trace-collector");
  const samplingText = str(args, "trace-sampling");
  if (collectorText !== undefined) {
    const checked = CollectorUrl.safeParse(collectorText);
    if (!checked.success) throw new UsageError(checked.error.issues[0]?.message ?? "invalid URL", "--trace-collector");
  }
  let sampling = fromFile?.sampling ?? 1;
  if (samplingText !== undefined) {
    const checked = SamplingPercent.safeParse(Number(samplingText));
    if (samplingText.trim() === "" || !checked.success) throw new UsageError(`expected a percentage from 0 to 100, got "${samplingText}"`, "--trace-sampling");
    sampling = checked.data;
  }
  const collector = collectorText ?? fromFile?.collector;
  if (collector === undefined) {
    if (samplingText !== undefined) throw new UsageError("needs --trace-collector (or spec.tracing in --config): spans need somewhere to go", "--trace-sampling");
    return undefined;
  }
  return { collector: new URL(collector), sampling: sampling / 100 };
}

/** `withControlPlane`: --ca is the control plane's trust bundle then, not a certificate source that overrides the file's. */
function certSources(args: Parsed, fromFile: { dir?: string; cert?: string; key?: string; ca?: string } | undefined, service: string, namespace: string, withControlPlane: boolean) {
  const flags = { certsDir: str(args, "certs-dir"), cert: str(args, "cert"), key: str(args, "key"), ca: str(args, "ca") };
  if (flags.certsDir || flags.cert || flags.key || (flags.ca && !withControlPlane)) return flags;
  if (fromFile) return { certsDir: fromFile.dir, cert: fromFile.cert, key: fromFile.key, ca: fromFile.ca };
  return { certsDir: defaultCertsDir(service, namespace) };
}
