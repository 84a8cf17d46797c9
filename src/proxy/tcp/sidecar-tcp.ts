/**
 * Opaque TCP in a sidecar: the inbound side (mTLS connections that chose mesh-tcp/1, to
 * the service's own tcp ports) and the outbound side (a local listener per TCP upstream,
 * and, with --transparent, connections mesh redirect sent to a Service's address).
 */
import type { TcpTimeouts } from "./pipe.ts";
import type { Service } from "../../config/kinds/service.ts";
import { defaultDestinationPolicy, type DestinationPolicy } from "../../config/kinds/destination-policy.ts";
import { bindNamed } from "../../core/bind-error.ts";
import type { ConnectionBudget } from "../../core/connection-budget.ts";
import type { Logger } from "../../core/log.ts";
import type { AccessLog } from "../access-log.ts";
import type { WorkloadCerts } from "../certs.ts";
import type { Snapshot } from "../destinations.ts";
import type { InboundPolicies } from "../inbound-admission.ts";
import type { ProxyMetrics } from "../metrics.ts";
import { InboundTcp } from "./inbound-tcp.ts";
import { upstreamHost, upstreamPort } from "../local-service-pool.ts";
import { ownService } from "../own-service.ts";
import { OutboundTcp, type TcpUpstream } from "./outbound-tcp.ts";
import type { OriginalDestination } from "../original-destination.ts";
import type { Socket } from "bun";
import type { RedirectedTcp } from "../transport/h1-server/listener.ts";
import { TcpReporter } from "./report.ts";
import { canonicalAddress } from "../../core/ip-address.ts";

export interface SidecarTcpOptions {
  service: string;
  namespace: string;
  /** The local service: tcp connections reach its host. */
  upstream: URL;
  upstreams: readonly TcpUpstream[];
  snapshot: () => Snapshot;
  certs: () => WorkloadCerts;
  policies: () => InboundPolicies;
  metrics: ProxyMetrics;
  accessLog?: AccessLog;
  budget: ConnectionBudget;
  /** A local listener's connection was closed at accept: the budget was spent. */
  onOverLimit?: () => void;
  /** With --transparent: where a redirected connection was going (original-destination.ts). */
  originalDestination?: (fd: number, localAddress: string) => OriginalDestination | undefined;
  /** With --transparent: a redirected connection bound for an address no Service has goes there (passthrough.ts), instead of being read as a call. */
  passthrough?: boolean;
  log: Logger;
}

export type SidecarTcp = ReturnType<typeof sidecarTcp>;

export function sidecarTcp(o: SidecarTcpOptions) {
  let ports: ReadonlySet<number> = new Set();
  const httpPort = upstreamPort(o.upstream);
  let timeouts: TcpTimeouts = defaultDestinationPolicy(o.service).timeouts;
  const inbound = new InboundTcp({
    service: o.service,
    host: upstreamHost(o.upstream),
    ports: () => ports,
    policies: o.policies,
    metrics: o.metrics,
    report: new TcpReporter(o.metrics, "inbound", o.accessLog),
    timeouts: () => timeouts,
  });
  const outbound = new OutboundTcp({
    snapshot: o.snapshot, certs: o.certs, metrics: o.metrics, report: new TcpReporter(o.metrics, "outbound", o.accessLog), budget: o.budget, onOverLimit: o.onOverLimit, log: o.log,
  });
  return {
    accept: inbound.accept.bind(inbound),
    /** The outbound side's refusals for want of places, counted with the outbound listener's. */
    outboundRefusals: outbound as { readonly refusedOverLimit: number },
    /**
     * From a config: the service's own tcp ports (the only ones the inbound reaches), and
     * its own DestinationPolicy's tcpIdle and tcpMaxDuration, which its callers' sidecars
     * hold connections to as well (default: 1 h idle, Envoy's TCP proxy idle timeout; no
     * longest life).
     */
    configure(services: readonly Service[], policies: readonly DestinationPolicy[]): void {
      const own = ownService(services, o)?.spec.ports ?? [];
      const declared = new Set(own.filter((p) => p.protocol === "tcp").map((p) => p.targetPort));
      // Raw bytes to the HTTP port would pass by everything the inbound does to a request: the
      // caller's identity header set (and a forged one removed), paths normalized, HTTP rules.
      if (declared.delete(httpPort))
        o.log.warn({ port: httpPort }, "a tcp port of this service's Service is its --upstream's HTTP port: the inbound carries no raw TCP to it, which would pass by the identity header and every HTTP check");
      ports = declared;
      const policy = policies.find((p) => p.spec.service === o.service && p.metadata.namespace === o.namespace);
      timeouts = (policy?.spec ?? defaultDestinationPolicy(o.service)).timeouts;
    },
    /**
     * Once a config's ports and policies are both in force: an open inbound connection they
     * would now refuse is reset, counted with that refusal's result (denied, no-such-port).
     */
    recheckOpen(): void {
      const reset = inbound.recheckOpen();
      if (reset > 0) o.log.info({ reset }, "carried connections the config no longer admits were reset");
    },
    /** Warns of each upstream `snapshot` cannot carry (a missing Service, a port not tcp): its connections will be refused. */
    checkUpstreams(snapshot: Snapshot): void {
      for (const u of o.upstreams) {
        const dest = snapshot.destinations.get(u.service);
        const problem = dest === undefined ? `no Service "${u.service}" in the config` : dest.tcpPorts.has(u.port) ? undefined : `port ${u.port} of ${u.service} is not a tcp port`;
        if (problem) o.log.warn({ upstream: `${u.service}:${u.port}`, version: snapshot.version }, `tcp upstream: ${problem}; its connections are refused`);
      }
    },
    /**
     * For --transparent, a connection on the outbound listener: carried when mesh redirect
     * sent it there from a Service's address (spec.addresses) at one of its tcp ports;
     * with passthrough, sniffed when it was bound for an address no Service has; undefined
     * for any other (a call to the listener itself too), which is read as HTTP.
     */
    redirected(sock: Socket<unknown>): RedirectedTcp | undefined {
      // Bun exposes the descriptor, though its types omit it.
      const original = o.originalDestination?.((sock as unknown as { fd: number }).fd, sock.localAddress);
      if (original === undefined || isListenerItself(original, sock)) return undefined;
      const dest = o.snapshot().byAddress.get(original.address);
      if (dest === undefined) return o.passthrough ? { adopt: (http) => outbound.passthrough(sock, original, http) } : undefined;
      if (!dest.tcpPorts.has(original.port)) return undefined;
      const target = { service: `${dest.name}.${dest.namespace}`, port: original.port };
      return { adopt: () => outbound.adopt(sock, target) };
    },
    /** Binds every upstream's listener; their ports, in order. */
    listen(): number[] {
      return o.upstreams.map((u) => bindNamed(`tcp upstream ${u.service}:${u.port}`, u.bind.address, u.bind.port, () => outbound.listen(u)));
    },
    get ports(): ReadonlySet<number> {
      return ports;
    },
    stopAccepting: () => outbound.stopAccepting(),
    /** A drain's end: every carried connection is ended gracefully. */
    closeAll(): void {
      inbound.closeAll();
      outbound.closeAll();
    },
  };
}

/** Connection tracking keeps a destination for every connection: one that was not redirected names the listener's own address. */
function isListenerItself(original: OriginalDestination, sock: Socket<unknown>): boolean {
  return original.port === sock.localPort && original.address === canonicalAddress(sock.localAddress);
}
