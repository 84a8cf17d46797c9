/**
 * Assembles a sidecar: the mTLS inbound listener that relays to the local service, the
 * outbound listener, their loopback servers for WebSocket upgrades, and the admin API.
 * It needs no control plane: the static config is a complete source of destinations.
 */
import { openTunnelDir } from "./tunnel-dir.ts";
import { configInForce, trustedRoots } from "./config-dump.ts";
import { compileRoutes } from "./routing.ts";
import type { Logger } from "../core/log.ts";
import { listenerTlsOf, type WorkloadCerts } from "./certs.ts";
import { parseConfigDocuments, staticAddressesTaken, withStatic, type ProxyDocuments } from "./control/config-documents.ts";
import { buildSnapshot, closeSnapshot, snapshotOf, type Snapshot } from "./destinations.ts";
import { InflightTracker } from "./inflight.ts";
import { inboundSettled } from "./inbound-settled.ts";
import { settlesWithin } from "../core/settles-within.ts";
import { startInboundHttp } from "./inbound.ts";
import { proxyMetrics } from "./metrics.ts";
import { startOutbound } from "./outbound.ts";
import { H1Listener } from "./transport/h1-server/listener.ts";
import { LoopbackTunnels } from "./transport/h1-server/loopback-tunnel.ts";
import { inboundHandler } from "./inbound-handler.ts";
import { outboundHandler } from "./outbound-handler.ts";
import { localServicePool, upstreamPort } from "./local-service-pool.ts";
import { WebSocketSessions } from "./websocket/sessions.ts";
import { UpstreamHealth } from "./upstream-health.ts";
import { limitUpstreamConnections, observePeerRefusals } from "./transport/dial.ts";
import { ConnectionBudget, connectionLimit, limitWarning, openFilesLimit } from "../core/connection-budget.ts";
import { inboundRefusals, outboundRefusals } from "./transport/tls-refusal-kind.ts";
import { bindNamed } from "../core/bind-error.ts";
import { READ_ONLY_MAX_CONNECTIONS, readOnlyListener } from "./read-only-listener.ts";
import { adminRoutes, statusRoutes, type Routes, type StatusState } from "./status-routes.ts";
import { refreshGauges } from "./gauges.ts";
import { requestAuthenticatorFor } from "./authentication/authenticator.ts";
import { keyFetchReport } from "./authentication/key-fetch-report.ts";
import { authorizerFor, dryRunAuthorizerFor } from "./authorization.ts";
import { instancesOf, rateLimiterFor } from "./rate-limit.ts";
import { upstreamHttpOf } from "./upstream-protocol.ts";
import type { InboundPolicies } from "./inbound-admission.ts";
import type { SavedConfig } from "./control/saved-config.ts";
import { OtlpExporter } from "./tracing/otlp-exporter.ts";
import { Tracer } from "./tracing/tracer.ts";
import { H2Server } from "./h2/h2-server.ts";
import { inboundH2 } from "./h2/inbound-h2.ts";
import { outboundH2 } from "./h2/outbound-h2.ts";
import { IdleStreams } from "./h2/idle-streams.ts";
import { sidecarTcp } from "./tcp/sidecar-tcp.ts";
import { hostPort } from "../core/ip-address.ts";
import { DEFAULT_STREAM_IDLE_TIMEOUT_MS, type Listen, type ProxyOptions } from "./proxy-options.ts";

/** The descriptors the listeners may take, and upstream connections; files, loopback servers and the control-plane client keep the rest. */
const LISTENER_SHARE_OF_FDS = 0.5;
const UPSTREAM_SHARE_OF_FDS = 0.4;

export interface RunningProxy {
  /** `tcp`: the TCP upstreams' listeners, in the order given. */
  ports: { inbound: number; outbound: number; admin: number; status?: number; tcp?: number[] };
  /** Validates a config version from the control plane and swaps it in; throws ConfigRejected with the reason. */
  applyConfig(documents: unknown[], version: string): void;
  /** A renewed certificate: new connections, in and out, use it; open ones are asked to move. */
  useCerts(certs: WorkloadCerts): void;
  /** The static config's documents, read again (an edit of --config): combined with the control plane's, as at start. */
  useStatic(documents: ProxyDocuments): void;
  /** Whether the local service should be offered to callers. */
  healthy(): Promise<boolean>;
  /**
   * The first step of a drain, alone: stops accepting inbound connections and reports not
   * ready, while the outbound listener serves on. For a service still shutting down.
   */
  stopInbound(): void;
  /**
   * Stops accepting, lets in-flight requests finish within the drain timeout, closes pools.
   * `serviceExited`: the service is gone, so no outbound drain delay is kept for it.
   */
  drain(serviceExited?: boolean): Promise<{ clean: boolean }>;
}

export async function startProxy(opts: ProxyOptions): Promise<RunningProxy> {
  const metrics = proxyMetrics();
  metrics.certificateExpiry.set({}, opts.certs.notAfter.getTime() / 1000);
  // Separate counts, so a drain can let the service finish its inbound requests while
  // it may still call other services through the outbound listener.
  const inboundInflight = new InflightTracker();
  const outboundInflight = new InflightTracker();
  let certs = opts.certs;
  let statics: ProxyDocuments = { services: opts.services, policies: opts.policies, authorization: opts.authorization, rateLimits: opts.rateLimits, authentication: opts.authentication ?? [], routes: opts.routes ?? [] };
  const saved = opts.awaitsConfig ? savedDocuments(opts.savedConfig, opts.log) : undefined;
  /** The control plane's last config (or the one saved from the last run); undefined without one. */
  let dynamic = saved;
  let config = saved ? withStatic(saved, statics) : statics;
  let staticVersion = 1;
  /** The destinations of `c`, with its routes compiled against them. */
  const snapshotOfConfig = (c: ProxyDocuments, version: string, previous?: Snapshot): Snapshot => {
    const next = buildSnapshot(c.services, c.policies, certs, version, previous, opts.zone);
    next.routes = compileRoutes(c.routes, next);
    return next;
  };
  let snapshot: Snapshot = snapshotOfConfig(config, saved ? opts.savedConfig!.version : `static-${staticVersion}`);
  const subject = { namespace: opts.namespace, service: opts.service, trustDomain: certs.trustDomain, httpPort: upstreamPort(opts.upstream) };
  const keyFetchFailed = keyFetchReport(metrics, opts.log);
  const policiesOf = (c: ProxyDocuments, previous?: InboundPolicies): InboundPolicies => ({
    authenticator: requestAuthenticatorFor(c.authentication, subject, previous?.authenticator, keyFetchFailed),
    authorizer: authorizerFor(c.authorization, subject),
    dryRun: dryRunAuthorizerFor(c.authorization, subject),
    limiter: rateLimiterFor(c.rateLimits, subject, instancesOf(c.services, subject), previous?.limiter),
    keepEscapedSlashes: opts.escapedSlashes === "keep",
    upstreamHttp: upstreamHttpOf(c.services, subject),
  });
  // Following a control plane, the policies come with its config: until one is applied (now, or saved from the last run), the inbound refuses.
  let inboundPolicies: InboundPolicies = opts.awaitsConfig && !saved ? { pending: "waiting for the first config from the control plane" } : policiesOf(config);
  let awaitingControlPlane = opts.awaitsConfig === true;
  let draining = false;
  const swap = (next: Snapshot) => {
    const old = snapshot;
    snapshot = next;
    closeSnapshot(old, next);
  };

  const spans = opts.tracing && new OtlpExporter(opts.tracing.collector, { "service.name": opts.service, "service.namespace": opts.namespace, "mesh.identity": certs.spiffeId }, metrics, opts.log);
  const tracer = spans && new Tracer(spans, opts.tracing!.sampling);

  // Open WebSocket relays, so a drain can send their clients elsewhere instead of waiting them out.
  const websockets = new WebSocketSessions();
  const health = new UpstreamHealth(opts.upstream, opts.healthPath);
  const localPool = localServicePool(opts.upstream);

  const fds = openFilesLimit();
  const budget = new ConnectionBudget(opts.maxConnections ?? connectionLimit(fds, LISTENER_SHARE_OF_FDS));
  limitUpstreamConnections(new ConnectionBudget(connectionLimit(fds, UPSTREAM_SHARE_OF_FDS)));
  observePeerRefusals(outboundRefusals(metrics, opts.log));
  const overLimit = limitWarning(opts.log, "mesh_connections_refused_total");
  // WebSocket upgrades are tunnelled from the raw listeners to these loopback servers; each
  // tunnel's extra descriptors come out of the listeners' budget.
  // Only this user may enter the sockets' directory: no other user's process can reach the servers behind the tunnels.
  const tunnelDir = openTunnelDir();
  const inboundTunnels = new LoopbackTunnels(tunnelDir.inboundPath, budget, () => overLimit("inbound websockets", budget));
  const inboundHttp = startInboundHttp({
    path: tunnelDir.inboundPath,
    upstream: opts.upstream, identities: inboundTunnels.identities, metrics, maxBodyBytes: opts.maxBodyBytes, tracker: inboundInflight, websockets,
    policies: () => inboundPolicies, accessLog: opts.accessLog, tracer,
  });
  const outboundDeps = { snapshot: () => snapshot, metrics, tracker: outboundInflight, maxBodyBytes: opts.maxBodyBytes, certs, websockets, accessLog: opts.accessLog, tracer };
  const outboundHttp = startOutbound(outboundDeps, tunnelDir.outboundPath);
  const outboundTunnels = new LoopbackTunnels(tunnelDir.outboundPath, budget, () => overLimit("outbound websockets", budget));
  const idleStreams = new IdleStreams(opts.streamIdleTimeoutMs ?? DEFAULT_STREAM_IDLE_TIMEOUT_MS);
  const inboundStreams = inboundH2({ upstream: opts.upstream, http1: localPool, metrics, tracker: inboundInflight, maxBodyBytes: opts.maxBodyBytes, idleStreams, policies: () => inboundPolicies, accessLog: opts.accessLog, tracer });
  // HTTP/2 connections (gRPC) are served on the listeners' own sockets.
  const inboundH2Server = new H2Server({ callerRequired: true, onStream: inboundStreams.onStream, onRefused: (reason) => metrics.refused.inc({ direction: "inbound", reason }) });
  inboundTunnels.retireTunnel = (name) => websockets.retire(name);
  const outboundStreams = outboundH2({ snapshot: () => snapshot, metrics, tracker: outboundInflight, maxBodyBytes: opts.maxBodyBytes, idleStreams, accessLog: opts.accessLog, tracer });
  const outboundH2Server = new H2Server({ callerRequired: false, onStream: outboundStreams, onRefused: (reason) => metrics.refused.inc({ direction: "outbound", reason }) });

  // Only a --transparent sidecar loads bun:ffi and libc's getsockopt.
  const originalDestination = opts.transparent ? (await import("./original-destination.ts")).originalDestinationReader() : undefined;
  const tcp = sidecarTcp({
    ...opts, upstreams: opts.tcpUpstreams ?? [], snapshot: () => snapshot, certs: () => certs, policies: () => inboundPolicies, metrics, budget, originalDestination,
    onOverLimit: () => overLimit("outbound tcp", budget),
  });
  tcp.configure(config.services, config.policies);
  if (!opts.awaitsConfig) tcp.checkUpstreams(snapshot);
  const inbound = new H1Listener({
    hostname: opts.inbound.address,
    port: opts.inbound.port,
    tls: listenerTlsOf(opts.certs),
    // Longer than callers' pool idle timeout (default 10 s), so a caller never reuses a connection this side has just closed.
    limits: { maxBodyBytes: opts.maxBodyBytes, idleTimeoutS: 30 },
    budget,
    tcp: tcp.accept,
    handler: inboundHandler({ pool: localPool, origin: opts.upstream.origin, metrics, tracker: inboundInflight, tunnels: inboundTunnels, h2: inboundH2Server, health, accessLog: opts.accessLog, policies: () => inboundPolicies, tracer, idleStreams }),
    events: {
      onRefused: inboundRefusals(metrics, opts.log),
      onOpen: () => metrics.connections.inc({ direction: "inbound" }),
      onOverLimit: () => overLimit("inbound", budget),
      onCredentialEnd: (reason) => metrics.connectionsRetired.inc({ reason }),
    },
  });
  const inboundPort = bindNamed("inbound listener", opts.inbound.address, opts.inbound.port, () => inbound.listen());
  const outbound = new H1Listener({
    hostname: opts.outbound.address,
    port: opts.outbound.port,
    limits: { maxBodyBytes: opts.maxBodyBytes, idleTimeoutS: 10 },
    budget,
    handler: outboundHandler({ snapshot: () => snapshot, metrics, tracker: outboundInflight, tunnels: outboundTunnels, h2: outboundH2Server, accessLog: opts.accessLog, tracer, idleStreams }),
    redirected: originalDestination && tcp.redirected,
    events: { onRefused: () => undefined, onOpen: () => undefined, onOverLimit: () => overLimit("outbound", budget) },
  });
  const outboundPort = bindNamed("outbound listener", opts.outbound.address, opts.outbound.port, () => outbound.listen());
  const outboundTwin = opts.transparent ? listenOnTwinLoopback(outbound, opts.outbound.address, outboundPort, opts.log) : undefined;
  const tcpPorts = tcp.listen();
  const status: StatusState = {
    notReady: () => (draining ? "draining" : inboundPolicies.pending ?? (awaitingControlPlane ? "waiting for the first config from the control plane" : undefined)),
    metrics,
    beforeScrape: () => refreshGauges(metrics, { inbound, outbound, inboundTunnels: [inboundTunnels], outboundTunnels: [outboundTunnels, tcp.outboundRefusals], status: statusPort, admin, snapshot: () => snapshot }),
  };
  // Each read-only port has its own small budget: a flood there must not take the data path's places.
  const readOnlyPort = (name: "status" | "admin", routes: Routes, listen: Listen) => {
    const own = new ConnectionBudget(READ_ONLY_MAX_CONNECTIONS);
    return readOnlyListener(routes, listen, own, {
      onRefused: (reason) => metrics.refused.inc({ direction: name, reason }),
      onOverLimit: () => overLimit(name, own),
    });
  };
  const statusListen = opts.status;
  const statusPort = statusListen ? readOnlyPort("status", statusRoutes(status), statusListen) : undefined;
  if (statusListen && statusPort) bindNamed("status listener", statusListen.address, statusListen.port, () => statusPort.listen());
  const configDump = () => ({
    service: opts.service,
    namespace: opts.namespace,
    ...(opts.zone !== undefined && { zone: opts.zone }),
    identity: certs.spiffeId,
    certificateExpires: certs.notAfter.toISOString(),
    trustedRoots: trustedRoots(certs),
    upstream: opts.upstream.origin,
    listeners: {
      inbound: `${opts.inbound.address}:${inboundPort}`,
      outbound: `${opts.outbound.address}:${outboundPort}`,
      ...(outboundTwin && { outboundTwin }),
      admin: `${opts.admin.address}:${admin.port}`,
      ...(statusListen && statusPort && { status: `${statusListen.address}:${statusPort.port}` }),
      ...(tcpPorts.length > 0 && { tcpUpstreams: opts.tcpUpstreams!.map((u, i) => ({ service: u.service, port: u.port, listen: `${u.bind.address}:${tcpPorts[i]}` })) }),
    },
    ...(tcp.ports.size > 0 && { tcpPorts: [...tcp.ports] }),
    escapedSlashes: opts.escapedSlashes ?? "refuse",
    ...(opts.transparent && { transparent: true, unknownDestinations: opts.passthrough ? "passthrough" : "refuse" }),
    ...(opts.tracing && { tracing: { collector: opts.tracing.collector.href, sampling: opts.tracing.sampling } }),
    ...configInForce(snapshot, config.routes, inboundPolicies),
  });
  const admin = readOnlyPort("admin", adminRoutes({ ...status, configDump }), opts.admin);
  bindNamed("admin listener", opts.admin.address, opts.admin.port, () => admin.listen());
  /** Not ready, and no new inbound connections: the first step of every drain. */
  const stopInbound = () => {
    draining = true;
    inbound.stopAccepting();
  };
  const ports = { inbound: inboundPort, outbound: outboundPort, admin: admin.port, ...(statusPort && { status: statusPort.port }), ...(tcpPorts.length > 0 && { tcp: tcpPorts }) };
  opts.log.info({ identity: opts.certs.spiffeId, ...ports }, "proxy ready");

  /** The config in force from the control plane's documents and the static ones: routes, destinations and carried TCP follow. */
  const reconfigure = (version: string) => {
    config = dynamic ? withStatic(dynamic, statics) : statics;
    if (dynamic) for (const problem of staticAddressesTaken(dynamic, statics)) opts.log.warn({ version }, problem);
    swap(snapshotOfConfig(config, version, snapshot));
    tcp.configure(config.services, config.policies);
    if (dynamic || !opts.awaitsConfig) tcp.checkUpstreams(snapshot);
  };
  return {
    ports,
    applyConfig(documents, version) {
      try {
        dynamic = parseConfigDocuments(documents);
      } catch (err) {
        if (inboundPolicies.pending !== undefined) inboundPolicies = { pending: `the control plane's config was refused: ${(err as Error).message}` };
        throw err;
      }
      reconfigure(version);
      inboundPolicies = policiesOf(config, inboundPolicies);
      awaitingControlPlane = false;
      tcp.recheckOpen();
    },
    useStatic(documents) {
      const before = { statics, config };
      statics = documents;
      try {
        reconfigure(dynamic ? snapshot.version : `static-${staticVersion + 1}`);
      } catch (err) {
        ({ statics, config } = before);
        throw err;
      }
      if (!dynamic) staticVersion++;
      // Until the control plane's first config, the inbound keeps refusing: policies come with it.
      if (inboundPolicies.pending === undefined) inboundPolicies = policiesOf(config, inboundPolicies);
      tcp.recheckOpen();
    },
    healthy: () => health.check(),
    useCerts(next) {
      certs = next;
      metrics.certificateExpiry.set({}, next.notAfter.getTime() / 1000);
      outboundDeps.certs = next;
      inbound.rotate(listenerTlsOf(next));
      swap(snapshotOfConfig(config, snapshot.version, snapshot));
    },
    stopInbound,
    async drain(serviceExited = false) {
      const deadline = Date.now() + opts.drainTimeoutMs;
      stopInbound();
      websockets.goingAway(); // 1001 to both sides: long-lived sockets would otherwise hold the drain to its deadline
      // The service may still be finishing requests that call other services, or shutting down and calling out: the outbound
      // listener closes only once the inbound side is done (./inbound-settled.ts) and the outbound delay has passed (or time is up).
      const delay = Bun.sleep(serviceExited ? 0 : Math.min(opts.outboundDrainDelayMs ?? 0, opts.drainTimeoutMs));
      let clean = await inboundSettled(inbound, inboundInflight, deadline);
      await delay;
      outbound.stopAccepting(); // no new calls from the service; accepted ones finish
      tcp.stopAccepting();
      if (clean) clean = await outboundInflight.settle(Math.max(0, deadline - Date.now()));
      // Each connection closes once its response is written; tunnels once their loopback side ends.
      const stopped = Promise.all([inboundHttp.stop(false), outboundHttp.stop(false)]);
      // GOAWAY: calls in flight finish, then each session and its connection close.
      inboundH2Server.stop(false);
      outboundH2Server.stop(false);
      while (inbound.openConnections > 0 || outbound.openConnections > 0 || inboundHttp.pendingRequests > 0 || outboundHttp.pendingRequests > 0) {
        if (Date.now() > deadline) {
          clean = false;
          break;
        }
        await Bun.sleep(10);
      }
      if (clean) clean = await settlesWithin(stopped, deadline - Date.now());
      // Carried TCP has no request to wait for: its connections end with the drain, in order (FIN both ways).
      tcp.closeAll();
      inbound.closeAll();
      outbound.closeAll();
      // Probes heard "not ready" throughout the drain; the port goes with the process.
      statusPort?.closeAll();
      localPool.close();
      void inboundHttp.stop(true);
      void outboundHttp.stop(true);
      inboundH2Server.stop(true);
      outboundH2Server.stop(true);
      inboundStreams.close();
      tunnelDir.remove();
      admin.closeAll();
      closeSnapshot(snapshot);
      snapshot = snapshotOf(snapshot.version, new Map());
      await opts.accessLog?.close();
      await spans?.close(Math.max(1000, deadline - Date.now()));
      opts.log.info({ clean }, "proxy drained");
      return { clean };
    },
  };
}

/** The documents of a saved config, if they still pass validation. */
function savedDocuments(saved: SavedConfig | undefined, log: Logger): ProxyDocuments | undefined {
  if (!saved) return undefined;
  try {
    const documents = parseConfigDocuments(saved.documents);
    log.info({ version: saved.version }, "serving the config saved from the last run until the control plane is heard");
    return documents;
  } catch (err) {
    log.warn({ version: saved.version, reason: (err as Error).message }, "the saved config is refused; waiting for the control plane's");
    return undefined;
  }
}

/**
 * With --transparent the outbound listener takes the other family's loopback too, at the
 * same port: REDIRECT sends each family's connections to its own loopback, so IPv6 calls
 * mesh redirect catches arrive at [::1] and IPv4 ones at 127.0.0.1. Where that family
 * has no loopback (IPv6 off), its redirects cannot be taken, which is logged.
 */
function listenOnTwinLoopback(outbound: H1Listener, address: string, port: number, log: Logger): string | undefined {
  const twin = address === "127.0.0.1" ? "::1" : address === "::1" ? "127.0.0.1" : undefined;
  if (twin === undefined) return undefined;
  try {
    outbound.alsoListen(twin);
  } catch (err) {
    log.warn({ address: twin, port, reason: (err as Error).message }, "the outbound listener cannot take the other family's redirected connections");
    return undefined;
  }
  return hostPort(twin, port);
}
